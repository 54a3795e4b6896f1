"""LLM-scored losses: ``LLMJudge`` (free score + critique) and ``LLMRubricLoss`` (levels).

Judge calls go through plait like any pipeline call (limits, retries, events), on the
judge's bound resources or, if unbound, those of the pipeline that produced the output. The
judge sees the pipeline's inputs (from the forward record, in training mode), the output and
the target. Replies are parsed leniently; unusable ones raise ``JudgeReplyError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from plait.errors import ConfigError
from plait.optim._calls import StructuredCall
from plait.optim._errors import JudgeReplyError
from plait.optim.loss import LossFn, LossItem, as_text, bound_resources
from plait.optim.record import record_of

__all__ = ["JudgeVerdict", "LLMJudge", "LLMLossFn", "LLMRubricLoss", "RubricVerdict",
           "case_text"]

M = TypeVar("M", bound=BaseModel)


class JudgeVerdict(BaseModel):
    """What ``LLMJudge`` asks for."""

    score: float = Field(description="Quality from 0.0 (useless) to 1.0 (perfect).")
    feedback: str = Field(description="What is wrong and how to improve it; empty if perfect.")


class RubricVerdict(BaseModel):
    """What ``LLMRubricLoss`` asks for."""

    level: int = Field(description="The number of the rubric level that fits best.")
    feedback: str = Field(description="Why, and what would reach a higher level.")


class LLMLossFn(LossFn, Generic[M]):
    """Base of losses that ask an LLM: one structured call per scored case.

    Args:
        alias: Endpoint alias of the judge.
        system_prompt: The judge's instructions.
        schema: The pydantic model of its reply.
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).
    """

    def __init__(self, alias: str, system_prompt: str, schema: type[M], *,
                 backward_alias: str | None = None) -> None:
        super().__init__(backward_alias=backward_alias)
        if not alias:
            raise ConfigError(f"{type(self).__name__} needs an endpoint alias, got {alias!r}.")
        self.alias = alias
        self.system_prompt = system_prompt
        self.schema = schema
        self._callers: dict[int, StructuredCall[M]] = {}

    async def ask(self, prompt: str, output: Any) -> M:
        """Ask the judge about ``output`` (whose pipeline's resources are the fallback)."""
        resources = self.resources if self.resources is not None else bound_resources(output)
        caller = self._callers.get(id(resources))
        if caller is None:
            caller = StructuredCall(self.alias, self.system_prompt, self.schema, resources,
                                    role=type(self).__name__)
            self._callers[id(resources)] = caller
        return await caller(prompt)


def case_text(output: Any, target: Any, *, label: str = "Output") -> str:
    """The case a judge sees: the pipeline inputs (when recorded), the output, the target."""
    parts: list[str] = []
    rec = record_of(output)
    if rec is not None and not rec.released:
        for input_id in rec.graph.input_ids:
            name = input_id.removeprefix("input:")
            parts.append(f"Input ({name}):\n{as_text(rec.values.get(input_id))}")
    parts.append(f"{label}:\n{as_text(output)}")
    if target is not None:
        parts.append(f"Reference / expected:\n{as_text(target)}")
    return "\n\n".join(parts)


class LLMJudge(LLMLossFn[JudgeVerdict]):
    """An LLM scores each output in [0, 1] against ``criteria`` and says what to improve.

    Args:
        alias: Endpoint alias of the judge.
        criteria: What a good output is.
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).

    Example:
        >>> judge = LLMJudge("judge", criteria="Correct, one sentence.").bind(resources)
        >>> loss = await judge(out, target="Paris")
        >>> loss.score, loss.feedback
    """

    name = "LLMJudge"

    def __init__(self, alias: str, criteria: str, *, backward_alias: str | None = None) -> None:
        super().__init__(alias, (
            "You are a strict evaluator. Score the output against the criteria from 0.0 to "
            "1.0 and give concrete, actionable feedback. Reply with JSON only: "
            '{"score": <0..1>, "feedback": "..."}.\nCriteria: ' + criteria
        ), JudgeVerdict, backward_alias=backward_alias)
        self.criteria = criteria

    async def score(self, output: Any, target: Any) -> LossItem:
        """Judge one output."""
        verdict = await self.ask(case_text(output, target), output)
        if not 0.0 <= verdict.score <= 1.0:
            raise JudgeReplyError(
                f"LLMJudge (alias '{self.alias}') gave score {verdict.score}, outside [0, 1]. "
                "State the scale in the criteria or use LLMRubricLoss with explicit levels.",
                alias=self.alias, reply=verdict.model_dump_json(),
            )
        return LossItem(output=output, score=verdict.score, feedback=verdict.feedback.strip())


class LLMRubricLoss(LLMLossFn[RubricVerdict]):
    """An LLM picks the rubric level that fits each output; the level's score is the score.

    Args:
        alias: Endpoint alias of the judge.
        levels: ``(score, description)`` pairs, scores in [0, 1], e.g.
            ``[(1.0, "correct and cited"), (0.5, "correct, no source"), (0.0, "wrong")]``.
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).
    """

    name = "LLMRubricLoss"

    def __init__(self, alias: str, levels: Sequence[tuple[float, str]], *,
                 backward_alias: str | None = None) -> None:
        checked = sorted(((float(s), d) for s, d in levels), key=lambda lv: -lv[0])
        if not checked or any(not 0.0 <= s <= 1.0 for s, _ in checked):
            raise ConfigError(
                f"LLMRubricLoss levels must be (score, description) pairs with scores in "
                f"[0, 1], got {list(levels)!r}."
            )
        rubric = "\n".join(f"Level {n}: {d}" for n, (_, d) in enumerate(checked, 1))
        super().__init__(alias, (
            "You grade outputs with a rubric. Pick the ONE level that fits the output best "
            "and say what would reach a higher level. Reply with JSON only: "
            '{"level": <number>, "feedback": "..."}.\nRubric (best first):\n' + rubric
        ), RubricVerdict, backward_alias=backward_alias)
        self.levels = checked

    async def score(self, output: Any, target: Any) -> LossItem:
        """Grade one output."""
        verdict = await self.ask(case_text(output, target), output)
        if not 1 <= verdict.level <= len(self.levels):
            raise JudgeReplyError(
                f"LLMRubricLoss (alias '{self.alias}') chose level {verdict.level}, but the "
                f"rubric has levels 1..{len(self.levels)}.",
                alias=self.alias, reply=verdict.model_dump_json(),
            )
        value = self.levels[verdict.level - 1][0]
        return LossItem(output=output, score=value, feedback=verdict.feedback.strip())
