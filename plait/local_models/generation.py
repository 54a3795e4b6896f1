"""The small contract between plait and a local inference engine.

A ``Generator`` turns a batch of prompts into a batch of generations in one blocking call;
the Torch and vLLM adapters implement it, and the micro-batcher feeds it. Token counts come
from the engine's own tokenizer, so usage is exact for local models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from plait.clients.base import LLMRequest
from plait.errors import ConfigError

__all__ = [
    "Generation",
    "GenerationRequest",
    "Generator",
    "format_prompt",
    "resolve_callable",
]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt with its sampling settings, resolved from an ``LLMRequest`` and the config."""

    prompt: str
    max_new_tokens: int
    temperature: float


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated reply with exact token counts."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    """A loaded model that generates for a whole batch in one blocking call."""

    def generate(self, batch: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one reply per request, in order."""
        ...

    def close(self) -> None:
        """Free the model's memory; the generator is not used after this."""
        ...


def format_prompt(request: LLMRequest) -> str:
    """The text a completion model sees: the system prompt, a blank line, the prompt.

    Chat templates are model-specific; a model that needs one can apply it in its
    ``generate_fn`` (Torch) or is served through vLLM's OpenAI server instead.
    """
    if request.system_prompt:
        return f"{request.system_prompt}\n\n{request.prompt}"
    return request.prompt


def resolve_callable(spec: str | Callable[..., Any], what: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (or return a callable as is).

    Raises:
        ConfigError: The module or attribute cannot be imported, or is not callable.
    """
    if callable(spec):
        return spec
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what}={spec!r}: cannot import module '{module_name}' ({exc}). The module must "
            "be importable where the model loads (on Ray: in every replica's environment)."
        ) from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"{what}={spec!r}: module '{module_name}' has no '{attr}'.")
    if not callable(target):
        raise ConfigError(f"{what}={spec!r} is not callable (got {type(target).__name__}).")
    return target
