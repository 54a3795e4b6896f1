"""The Torch adapter: a causal LM and its tokenizer as a batch ``Generator``.

torch is imported only when a model loads, so ``import plait`` stays light. The built-in
sampling loop left-pads the batch and recomputes the whole sequence each step (no KV
cache): plain and correct for any ``model(input_ids) -> logits``; models with a faster
``generate`` (Hugging Face) bring it through ``generate_fn``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from plait.errors import ConfigError
from plait.local_models.generation import Generation, GenerationRequest, resolve_callable

if TYPE_CHECKING:
    import torch

    from plait.local_models.config import TorchEndpointConfig

__all__ = ["TokenizerLike", "TorchGenerator", "import_torch", "load_torch_generator",
           "sample_loop"]

#: ``(model, tokenizer, prompt_ids, max_new_tokens, temperature, generator) -> new ids``.
GenerateFn = Callable[..., list[list[int]]]


class TokenizerLike(Protocol):
    """What plait needs from a tokenizer."""

    pad_id: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        ...


def import_torch() -> Any:
    """Import torch, silencing its warning about a missing numpy (plait never needs numpy).

    Raises:
        ConfigError: torch is not installed; the message gives the install command.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
            import torch
    except ImportError as exc:
        raise ConfigError(
            "TorchEndpointConfig needs torch. Install it with: pip install 'plait-pipelines[torch]'"
        ) from exc
    return torch


class TorchGenerator:
    """Generates for a batch with one model on one device.

    Args:
        model: The causal LM (already on ``device`` and in eval mode).
        tokenizer: Its tokenizer.
        device: Where inputs go.
        generate_fn: The sampling loop (defaults to :func:`sample_loop`).
        seed: Seed of the sampler, or None.
    """

    def __init__(self, model: Any, tokenizer: TokenizerLike, device: str,
                 generate_fn: GenerateFn | None = None, seed: int | None = 0) -> None:
        torch = import_torch()
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self._generate_fn: GenerateFn = generate_fn or sample_loop
        self._sampler = torch.Generator(device=device)
        if seed is None:
            self._sampler.seed()
        else:
            self._sampler.manual_seed(seed)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one reply per request; requests with one temperature share a call."""
        tok = self.tokenizer
        prompt_ids = [tok.encode(r.prompt) for r in batch]
        results: list[Generation | None] = [None] * len(batch)
        groups: dict[float, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(r.temperature, []).append(i)
        for temperature, rows in groups.items():
            max_new = max(batch[i].max_new_tokens for i in rows)
            new_ids = self._generate_fn(self.model, tok, [prompt_ids[i] for i in rows],
                                        max_new, temperature, self._sampler)
            for i, ids in zip(rows, new_ids, strict=True):
                results[i] = self._finish(prompt_ids[i], ids, batch[i].max_new_tokens)
        return [r for r in results if r is not None]

    def _finish(self, prompt: list[int], new_ids: list[int], max_new: int) -> Generation:
        eos = self.tokenizer.eos_id
        ids = new_ids[:max_new]
        if eos is not None and eos in ids:
            cut = ids.index(eos)
            # The stop token was generated, so it counts as output, but it is not text.
            return Generation(self.tokenizer.decode(ids[:cut]), len(prompt), cut + 1, "stop")
        return Generation(self.tokenizer.decode(ids), len(prompt), len(ids), "length")

    def close(self) -> None:
        """Drop the model; on CUDA also return cached memory to the driver."""
        torch = import_torch()
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def sample_loop(model: Any, tokenizer: TokenizerLike, prompt_ids: list[list[int]],
                max_new_tokens: int, temperature: float, generator: Any) -> list[list[int]]:
    """The built-in batched sampling loop: left-pad, then one full forward pass per token.

    Temperature 0 is greedy. A row stops at ``tokenizer.eos_id``; the loop stops when
    every row has.

    Returns:
        The new token ids of each prompt (the eos token included when generated).
    """
    torch = import_torch()
    device = generator.device
    longest = max(1, *(len(p) for p in prompt_ids))
    pad = tokenizer.pad_id
    x: torch.Tensor = torch.tensor(
        [[pad] * (longest - len(p)) + p for p in prompt_ids], dtype=torch.long, device=device)
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            result = model(x)
            logits: torch.Tensor = getattr(result, "logits", result)[:, -1, :].float()
            if temperature <= 0:
                token = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            out.append(token)
            x = torch.cat([x, token.unsqueeze(-1)], dim=-1)
            if tokenizer.eos_id is not None:
                done |= token == tokenizer.eos_id
                if bool(done.all()):
                    break
    if not out:
        return [[] for _ in prompt_ids]
    return torch.stack(out, dim=-1).tolist()


def load_torch_generator(config: TorchEndpointConfig) -> TorchGenerator:
    """Build or load the model of ``config`` on its device.

    Raises:
        ConfigError: Bad factory, missing path, or ``device='cuda'`` without a visible GPU.
    """
    torch = import_torch()
    device = config.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise ConfigError(
            f"device={device!r} but torch sees no GPU (CUDA_VISIBLE_DEVICES={visible}, "
            f"torch {torch.__version__}). Use device='cpu', install a CUDA build of torch, "
            "or on Ray give the alias num_gpus_per_replica > 0."
        )
    generate_fn: GenerateFn | None = None
    model: Any
    tokenizer: Any
    if config.generate_fn is not None:
        generate_fn = resolve_callable(config.generate_fn, "generate_fn")
    if config.hf_path is not None:
        from plait.local_models.hf import hf_generate, load_hf_causal_lm

        model, tokenizer = load_hf_causal_lm(config.hf_path, config.dtype)
        generate_fn = generate_fn or hf_generate
    else:
        model, tokenizer = _from_factory(config)
        if config.dtype is not None:
            model = model.to(dtype=_dtype(torch, config.dtype))
    _check_tokenizer(tokenizer, config.model_name)
    model = model.to(device)
    model.eval()
    return TorchGenerator(model, tokenizer, device, generate_fn, config.seed)


def _from_factory(config: TorchEndpointConfig) -> tuple[Any, Any]:
    assert config.model_factory is not None  # the config checks one of the two is set
    built: object = resolve_callable(config.model_factory, "model_factory")()
    if not isinstance(built, tuple) or len(cast(tuple[Any, ...], built)) != 2:
        raise ConfigError(
            f"model_factory={config.model_name!r} must return (model, tokenizer), got "
            f"{type(cast(object, built)).__name__}."
        )
    return cast(tuple[Any, Any], built)


def _dtype(torch: Any, name: str) -> Any:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"dtype={name!r} is not a torch dtype; use e.g. 'float16'.")
    return dtype


def _check_tokenizer(tokenizer: object, model_name: str) -> None:
    missing = [a for a in ("encode", "decode", "pad_id", "eos_id") if not hasattr(tokenizer, a)]
    if missing:
        raise ConfigError(
            f"The tokenizer of {model_name!r} lacks {missing}; it needs encode(str) -> "
            "list[int], decode(list[int]) -> str, pad_id and eos_id (None if it has none)."
        )
