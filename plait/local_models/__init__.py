"""Local models as endpoints: PyTorch or vLLM models run by plait itself.

Put a ``TorchEndpointConfig`` or ``VLLMEndpointConfig`` in a ``ResourceConfig`` beside
hosted endpoints; ``LLMInference(alias=...)`` calls it like any other endpoint. With the
local executor the model runs in-process (``LocalModelClient``: loaded once, requests
micro-batched); on Ray each alias becomes a pool of GPU-pinned replica actors
(``plait_ray.replicas``). Token usage is counted by the model's own tokenizer.

Example:
    >>> resources = ResourceConfig(endpoints={
    ...     "hosted": OpenAIEndpointConfig(model="gpt-4o-mini"),
    ...     "local": TorchEndpointConfig(
    ...         model_factory="plait.local_models.tiny:tiny_char_lm", max_batch=16),
    ... })
"""

from plait.local_models.client import LocalModelClient
from plait.local_models.config import LocalModelConfig, TorchEndpointConfig, VLLMEndpointConfig
from plait.local_models.generation import (
    Generation,
    GenerationRequest,
    Generator,
    format_prompt,
)
from plait.local_models.runner import LocalModelRunner

__all__ = [
    "Generation",
    "GenerationRequest",
    "Generator",
    "LocalModelClient",
    "LocalModelConfig",
    "LocalModelRunner",
    "TorchEndpointConfig",
    "VLLMEndpointConfig",
    "format_prompt",
    "is_local_model",
]


def is_local_model(config: object) -> bool:
    """Whether ``config`` is a local-model endpoint (run by plait, not over HTTP)."""
    return isinstance(config, LocalModelConfig)
