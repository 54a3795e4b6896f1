"""``Optimizer``: an LLM rewrites each learnable Parameter from its accumulated feedback.

One structured call per Parameter with feedback: the optimizer model sees the Parameter's
description (its role, which the new value must keep), its current value and every feedback
item, and answers a short summary of the feedback plus the new value. Parameters are updated
upstream first (see ``plait.optim.order``); a downstream call is told what its upstream
Parameters changed to in this step. Independent Parameters are updated concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import BaseModel, Field

from plait.errors import ConfigError
from plait.optim._calls import StructuredCall
from plait.optim._errors import JudgeReplyError
from plait.optim.order import position_of
from plait.parameter import Parameter

__all__ = ["OPTIMIZER_SYSTEM_PROMPT", "Optimizer", "ParamUpdate", "StepSummary", "UpdateReply"]

OPTIMIZER_SYSTEM_PROMPT = (
    "You improve one text parameter (usually a prompt) of an LLM pipeline. You get its role, "
    "its current value and feedback collected from the pipeline's outputs. Summarize what the "
    "feedback asks for, then write an improved value that fixes the criticized behaviour, "
    "keeps what works, and keeps the parameter's role. Reply with JSON only: "
    '{"summary": "...", "new_value": "..."}.'
)
_MAX_ITEM_CHARS = 2000


class UpdateReply(BaseModel):
    """What the optimizer model answers for one Parameter."""

    summary: str = Field(description="What the feedback asks for, in one or two sentences.")
    new_value: str = Field(description="The complete new value of the parameter.")


@dataclass
class ParamUpdate:
    """The update of one Parameter in a step.

    Attributes:
        name: Dotted name of the Parameter (as last seen by backward()).
        old: Value before the step.
        new: Value after the step.
        feedback_count: Feedback items the update was based on.
        summary: The optimizer model's summary of the feedback.
    """

    name: str
    old: str
    new: str
    feedback_count: int
    summary: str

    @property
    def changed(self) -> bool:
        """True when the value changed."""
        return self.old != self.new


@dataclass
class StepSummary:
    """What one ``optimizer.step()`` did.

    Attributes:
        updates: One entry per Parameter that had feedback, in update order.
        llm_calls: Optimizer LLM calls made.
    """

    updates: list[ParamUpdate] = field(default_factory=list[ParamUpdate])
    llm_calls: int = 0

    @property
    def changed(self) -> list[str]:
        """Names of the Parameters whose value changed."""
        return [u.name for u in self.updates if u.changed]


class Optimizer:
    """Rewrites learnable Parameters from their feedback with an LLM (like ``torch.optim``).

    Args:
        params: Parameters to optimize, e.g. ``pipeline.parameters()``; only those with
            ``requires_grad`` are updated.
        alias: Endpoint alias of the optimizer model.
        system_prompt: The optimizer model's instructions.

    Example:
        >>> optimizer = Optimizer(pipeline.parameters()).bind(resources)
        >>> pipeline.train(); optimizer.zero_feedback()
        >>> loss = await loss_fn(await pipeline(x), target=y)
        >>> await loss.backward()
        >>> summary = await optimizer.step()
    """

    def __init__(self, params: Iterable[Parameter], alias: str = "optimizer", *,
                 system_prompt: str = OPTIMIZER_SYSTEM_PROMPT) -> None:
        self.params = [p for p in dict.fromkeys(params) if p.requires_grad]
        if not alias:
            raise ConfigError(f"Optimizer needs an endpoint alias, got {alias!r}.")
        self.alias = alias
        self.system_prompt = system_prompt
        self._caller = StructuredCall(alias, system_prompt, UpdateReply, None, role="Optimizer")

    def bind(self, resources: Any) -> Self:
        """Resources for the optimizer's calls (default: the active ``ExecutionSettings``)."""
        self._caller = StructuredCall(self.alias, self.system_prompt, UpdateReply, resources,
                                      role="Optimizer")
        return self

    def zero_feedback(self) -> None:
        """Drop the accumulated feedback of every Parameter (like ``zero_grad``)."""
        for param in self.params:
            param.zero_feedback()

    async def step(self) -> StepSummary:
        """Rewrite every Parameter that has feedback, upstream ones first.

        Returns:
            Which Parameters changed, with old and new values.

        Raises:
            JudgeReplyError: The optimizer model replied something unusable (no value changes).
        """
        todo = [p for p in self.params if p.feedback]
        summary = StepSummary()
        done: dict[Parameter, ParamUpdate] = {}
        while todo:
            # A wave: every Parameter none of whose pending upstream Parameters is left.
            wave = [p for p in todo if not any(u in todo for u in _upstream(p))]
            wave = wave or todo[:1]  # a cycle across graphs: fall back to one at a time
            updates = await asyncio.gather(*(self._update(p, done) for p in wave))
            for param, update in zip(wave, updates, strict=True):
                done[param] = update
                summary.updates.append(update)
            todo = [p for p in todo if p not in done]
        summary.llm_calls = len(summary.updates)
        return summary

    async def _update(self, param: Parameter, done: dict[Parameter, ParamUpdate]) -> ParamUpdate:
        position = position_of(param)
        name = position.name if position else (param.description or "parameter")
        feedback = param.feedback
        upstream = [done[u] for u in _upstream(param) if u in done and done[u].changed]
        reply = await self._caller(_prompt(name, param, feedback, upstream))
        new = reply.new_value.strip()
        if not new:
            raise JudgeReplyError(
                f"Optimizer (alias '{self.alias}') proposed an empty value for {name!r}; the "
                "value was kept. Check the optimizer model or its system_prompt.",
                alias=self.alias, reply=reply.model_dump_json(),
            )
        old = param.value
        param.apply_update(new)
        return ParamUpdate(name, old, new, len(feedback), reply.summary.strip())


def _upstream(param: Parameter) -> list[Parameter]:
    position = position_of(param)
    return list(position.upstream) if position is not None else []


def _prompt(name: str, param: Parameter, feedback: list[str], upstream: list[ParamUpdate]) -> str:
    items = "\n".join(f"{n}. {_clip(t)}" for n, t in enumerate(feedback, 1))
    parts = [
        f"Parameter: {name}",
        f"Role (the new value must keep this role): {param.description}",
        f"Current value:\n<<<\n{param.value}\n>>>",
        f"Feedback ({len(feedback)} items):\n{items}",
    ]
    if upstream:
        changes = "\n".join(f"- {u.name}: {u.old!r} -> {u.new!r}" for u in upstream)
        parts.append("Upstream parameters already changed in this step (their outputs feed "
                     f"this one; do not duplicate their fixes):\n{changes}")
    return "\n\n".join(parts)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ITEM_CHARS else text[:_MAX_ITEM_CHARS] + " [...]"
