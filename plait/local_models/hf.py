"""Load a Hugging Face causal LM from a local directory (``TorchEndpointConfig(hf_path=...)``).

Not exercised by plait's test suite: transformers is not a dependency and weights are never
downloaded. The path is kept small and explicit so it is easy to check by hand: load with
``local_files_only=True``, wrap the tokenizer in plait's ``TokenizerLike`` shape, and return
the model; the built-in sampling loop then drives ``model(input_ids).logits``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from plait.errors import ConfigError

__all__ = ["HFTokenizer", "hf_generate", "load_hf_causal_lm"]


class HFTokenizer:
    """A ``transformers`` tokenizer in the shape plait's sampling loop needs."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        eos: int | None = tokenizer.eos_token_id
        pad: int | None = tokenizer.pad_token_id
        self.eos_id = eos
        self.pad_id: int = pad if pad is not None else (eos if eos is not None else 0)

    def encode(self, text: str) -> list[int]:
        """Token ids, with the model's special prefix tokens (BOS)."""
        return list(self._tokenizer.encode(text, add_special_tokens=True))

    def decode(self, ids: list[int]) -> str:
        """Text, without special tokens."""
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))


def load_hf_causal_lm(path: str, dtype: str | None) -> tuple[Any, HFTokenizer]:
    """Load model and tokenizer from a local directory, never from the network.

    Raises:
        ConfigError: transformers is missing or ``path`` is not a local model directory.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(
            f"hf_path={path!r} is not a local directory. plait loads Hugging Face models "
            "only from disk; fetch it first, e.g. `huggingface-cli download <repo> "
            "--local-dir <dir>`, and pass that directory."
        )
    try:
        # Imported by name: transformers is optional and untyped for plait's purposes.
        transformers: Any = importlib.import_module("transformers")
    except ImportError as exc:
        raise ConfigError(
            "TorchEndpointConfig(hf_path=...) needs transformers. Install it with: "
            "pip install transformers"
        ) from exc
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    tokenizer: Any = transformers.AutoTokenizer.from_pretrained(
        str(directory), local_files_only=True)
    model: Any = transformers.AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    return model, HFTokenizer(tokenizer)


def hf_generate(model: Any, tokenizer: HFTokenizer, prompt_ids: list[list[int]],
                max_new_tokens: int, temperature: float, generator: Any) -> list[list[int]]:
    """The default ``generate_fn`` for ``hf_path``: ``model.generate`` with an attention mask.

    Left padding with a mask keeps each prompt's output independent of its batch, and
    ``generate`` uses the model's KV cache. ``generator`` is unused: Hugging Face sampling
    draws from torch's global generator.
    """
    del generator
    from plait.local_models.torch_adapter import import_torch

    torch = import_torch()
    longest = max(1, *(len(p) for p in prompt_ids))
    pad = tokenizer.pad_id
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompt_ids],
                       dtype=torch.long, device=model.device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompt_ids],
                        dtype=torch.long, device=model.device)
    sampling: dict[str, Any] = {"do_sample": temperature > 0}
    if temperature > 0:
        sampling["temperature"] = temperature
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             pad_token_id=pad, **sampling)
    return [list(row) for row in out[:, longest:].tolist()]
