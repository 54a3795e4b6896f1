"""One structured LLM call made by the optimization loop, sent through plait's own execution.

Judges, LLM backward steps and the optimizer call LLMs the same way pipelines do: a tiny
internal ``Module`` holding one ``LLMInference`` is run with the caller's resources, so
endpoint limits, retries and events apply. The JSON schema of the expected pydantic model is
sent to the endpoint, but the reply is parsed here, leniently (code fences and prose around
the JSON are tolerated), so a bad reply becomes one clear ``JudgeReplyError``.
"""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from plait.llm import LLMInference
from plait.module import Module
from plait.optim._errors import JudgeReplyError
from plait.parameter import Parameter

__all__ = ["StructuredCall", "parse_reply"]

M = TypeVar("M", bound=BaseModel)


class _RawJSONInference(LLMInference):
    """Sends the schema like any LLMInference but returns the raw text for lenient parsing."""

    def parse(self, text: str) -> Any:
        return text


class _OneCall(Module):
    def __init__(self, alias: str, system_prompt: str, schema: type[BaseModel]) -> None:
        super().__init__()
        self.llm = _RawJSONInference(
            alias, system_prompt=Parameter(system_prompt, requires_grad=False),
            temperature=0.0, response_format=schema,
        )

    def forward(self, prompt: str) -> Any:
        return self.llm(prompt)


class StructuredCall(Generic[M]):
    """An LLM call on ``alias`` whose reply is parsed into ``schema``.

    Args:
        alias: Endpoint alias.
        system_prompt: Fixed instructions for the call.
        schema: The pydantic model the reply must follow.
        resources: A ``ResourceConfig`` (or anything ``Module.bind`` accepts); None uses the
            active ``ExecutionSettings``.
        role: Who is calling, for error messages ("LLMJudge", "Optimizer", ...).
    """

    def __init__(self, alias: str, system_prompt: str, schema: type[M], resources: Any,
                 role: str) -> None:
        self.alias = alias
        self.schema = schema
        self.role = role
        self._module = _OneCall(alias, system_prompt, schema)
        if resources is not None:
            self._module.bind(resources=resources)

    async def __call__(self, prompt: str) -> M:
        """Send ``prompt``; return the parsed reply."""
        text = await self._module(prompt)
        return parse_reply(str(text), self.schema, alias=self.alias, role=self.role)


def parse_reply(text: str, schema: type[M], *, alias: str, role: str) -> M:
    """Parse ``text`` into ``schema``, tolerating code fences and prose around the JSON.

    Raises:
        JudgeReplyError: No JSON object in the reply validates against ``schema``.
    """
    problem = "it contains no JSON object"
    for candidate in _json_objects(text):
        try:
            return schema.model_validate(candidate)
        except ValidationError as exc:
            problem = f"its JSON does not fit {schema.__name__}: {_short(exc)}"
    raise JudgeReplyError(
        f"{role} (alias '{alias}') replied {text[:200]!r}, which cannot be used: {problem}. "
        f"Expected a JSON object with fields {sorted(schema.model_fields)}. Use a model that "
        "follows JSON schemas (structured outputs), or lower its temperature.",
        alias=alias, reply=text,
    )


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON object found in ``text``, in order."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = text.find("{")
    while pos != -1:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        found.append(value)
        pos = text.find("{", end)
    return found


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )[:300]
