"""``LLMInference``: the leaf module that is one LLM call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from plait.clients.base import LLMRequest
from plait.errors import ConfigError, TraceError
from plait.graph import Ref
from plait.module import Module
from plait.parameter import Parameter
from plait.tracing.context import user_source_location

if TYPE_CHECKING:
    from plait.optim.backward import BackwardContext, InputFeedback
    from plait.tracing.tracer import Tracer

__all__ = ["LLMInference"]


class LLMInference(Module):
    """One LLM call, sent to the endpoint bound to ``alias`` when the graph runs.

    Args:
        alias: Endpoint alias, resolved through the ``ResourceConfig`` at run time.
        system_prompt: A string (frozen) or a learnable ``Parameter``.
        temperature: Sampling temperature.
        max_tokens: Output token cap, or None for the provider default.
        response_format: A pydantic model class: the reply is requested as JSON following its
            schema, validated, and returned as an instance. A validation failure is retried
            within the endpoint's retry budget.
        as_value: Return a ``plait.values.Value`` instead of the bare reply: kind RESPONSE
            (text) or STRUCTURED (``response_format``), ``ref`` the node id, and ``meta`` with
            alias, model, input_tokens, output_tokens, cost_usd and latency_s.

    Example:
        >>> class Facts(BaseModel):
        ...     title: str
        ...     facts: list[str]
        >>> extract = LLMInference(alias="fast", response_format=Facts)
    """

    leaf = True

    def __init__(
        self,
        alias: str,
        system_prompt: str | Parameter = "",
        temperature: float = 1.0,
        max_tokens: int | None = None,
        response_format: type[BaseModel] | None = None,
        as_value: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(alias, str) or not alias:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"LLMInference alias must be a non-empty string, got {alias!r}.")
        if response_format is not None and not (
            isinstance(response_format, type) and issubclass(response_format, BaseModel)  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise ConfigError(
                f"response_format must be a pydantic BaseModel subclass, got {response_format!r}."
            )
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1 or None, got {max_tokens}.")
        self.alias = alias
        self.system_prompt = (
            system_prompt
            if isinstance(system_prompt, Parameter)
            else Parameter(system_prompt, requires_grad=False)
        )
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.response_format = response_format
        self.as_value = as_value
        # The schema is fixed per class; computing it per call would cost ~100 µs.
        self.json_schema = response_format.model_json_schema() if response_format else None

    def forward(self, prompt: str) -> Any:
        """Not called directly: the executor sends the request (see ``build_request``)."""
        raise NotImplementedError("LLMInference runs through the executor, not forward().")

    def trace_leaf(
        self, tracer: Tracer, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Record this call as one ``llm`` node: exactly one prompt, a string."""
        if kwargs.keys() - {"prompt"} or len(args) + len(kwargs) != 1:
            raise TraceError(
                f"LLMInference '{path}' takes exactly one prompt, called at "
                f"{user_source_location()} with {len(args)} positional and {sorted(kwargs)} "
                "keyword arguments. Build one string, e.g. self.llm(f\"{a}\\n{b}\")."
            )
        prompt = args[0] if args else kwargs["prompt"]
        lifted = tracer.lift(prompt, where=f"the prompt of '{path}'")
        if not isinstance(lifted, Ref | str):
            raise TraceError(
                f"LLMInference '{path}' got a {type(prompt).__name__} as prompt at "
                f"{user_source_location()}. Prompts are strings: format it, e.g. "
                "json.dumps(...) on real values, or an f-string or F.to_json(...) on traced "
                "values."
            )
        return tracer.proxy(tracer.record("llm", path, (lifted,), {}, base=path,
                                          module_type=type(self).__name__, alias=self.alias))

    def build_request(self, prompt: str) -> LLMRequest:
        """The provider-neutral request for ``prompt`` with this module's current settings."""
        fmt = self.response_format
        return LLMRequest(
            prompt=prompt,
            system_prompt=self.system_prompt.value,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            json_schema=self.json_schema,
            schema_name=fmt.__name__ if fmt is not None else "response",
        )

    def parse(self, text: str) -> Any:
        """The reply as the module's output: text, or a validated ``response_format`` model."""
        parsed = (text if self.response_format is None
                  else self.response_format.model_validate_json(text))
        if not self.as_value:
            return parsed
        from plait.values import Value, ValueKind

        kind = ValueKind.RESPONSE if self.response_format is None else ValueKind.STRUCTURED
        return Value(kind, parsed)

    async def backward(self, feedback: str, ctx: BackwardContext) -> InputFeedback:
        """Feedback for the system prompt (if learnable) and the prompt input.

        Uses ``ctx.llm`` when the loss was given a backward alias, else a fixed template;
        see ``plait.optim.llm_backward``.
        """
        from plait.optim.llm_backward import llm_backward

        return await llm_backward(self, feedback, ctx)

    def extra_repr(self) -> str:
        """Alias, temperature and response format."""
        fmt = f", response_format={self.response_format.__name__}" if self.response_format else ""
        return f"alias={self.alias!r}, temperature={self.temperature}{fmt}"
