"""Comparative losses: ``PairwisePreferenceLoss`` (A vs B) and ``RankingLoss`` (n outputs).

Both take a list of candidate outputs for the same task, e.g. the outputs of two pipeline
variants, or of one pipeline sampled several times:

    loss = await PairwisePreferenceLoss("judge")([out_a, out_b], target=task)
    loss = await RankingLoss("judge")([o1, o2, o3])

Each candidate becomes one ``LossItem``: the preferred one scores 1 and the other 0 (a tie
0.5 each); in a ranking the best scores 1, the worst 0, linearly in between. Each candidate
gets its own feedback, so ``backward()`` improves the pipeline that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel, Field

from plait.errors import ConfigError
from plait.optim._errors import JudgeReplyError
from plait.optim.judges import LLMLossFn, case_text
from plait.optim.loss import Loss, LossItem, as_text

__all__ = ["PairwisePreferenceLoss", "PreferenceVerdict", "RankingLoss", "RankingVerdict"]

V = TypeVar("V", bound=BaseModel)


class PreferenceVerdict(BaseModel):
    """What ``PairwisePreferenceLoss`` asks for."""

    winner: str = Field(description='"A", "B" or "tie".')
    feedback_a: str = Field(description="How output A should improve.")
    feedback_b: str = Field(description="How output B should improve.")


class RankingVerdict(BaseModel):
    """What ``RankingLoss`` asks for."""

    ranking: list[int] = Field(description="Candidate numbers, best first (each exactly once).")
    feedback: list[str] = Field(description="Feedback per candidate, in candidate order.")


class _Comparative(LLMLossFn[V]):
    async def score(self, output: Any, target: Any) -> LossItem:
        raise ConfigError(
            f"{type(self).__name__} compares outputs: call it with a list of candidates, "
            "e.g. await loss_fn([out_a, out_b], target=task)."
        )

    def _candidates(self, outputs: Any, count: int | None) -> list[Any]:
        if not isinstance(outputs, list | tuple):
            raise ConfigError(
                f"{type(self).__name__} takes a list of candidate outputs, got "
                f"{type(outputs).__name__}. Call it as await loss_fn([out_a, out_b])."
            )
        candidates: list[Any] = list(cast("Sequence[Any]", outputs))
        if (count is not None and len(candidates) != count) or len(candidates) < 2:
            want = count if count is not None else "at least 2"
            raise ConfigError(
                f"{type(self).__name__} needs {want} candidates, got {len(candidates)}."
            )
        return candidates


class PairwisePreferenceLoss(_Comparative[PreferenceVerdict]):
    """An LLM says which of two outputs is better, and how each should improve.

    Args:
        alias: Endpoint alias of the judge.
        criteria: What "better" means (default: more correct, helpful and clear).
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).
    """

    name = "PairwisePreferenceLoss"

    def __init__(self, alias: str, criteria: str = "more correct, helpful and clear", *,
                 backward_alias: str | None = None) -> None:
        super().__init__(alias, (
            "Compare two outputs for the same task and say which is better (" + criteria +
            '). Reply with JSON only: {"winner": "A" | "B" | "tie", "feedback_a": "...", '
            '"feedback_b": "..."}.'
        ), PreferenceVerdict, backward_alias=backward_alias)

    async def __call__(self, outputs: Any, target: Any = None) -> Loss:
        """Compare ``outputs`` (two candidates); ``target`` is an optional reference."""
        a, b = self._candidates(outputs, 2)
        prompt = (case_text(a, target, label="Output A") + "\n\nOutput B:\n" + as_text(b))
        verdict = await self.ask(prompt, a)
        winner = verdict.winner.strip().strip('"').lower()
        scores = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5)}.get(winner)
        if scores is None:
            raise JudgeReplyError(
                f"PairwisePreferenceLoss (alias '{self.alias}') named winner "
                f"{verdict.winner!r}; expected 'A', 'B' or 'tie'.",
                alias=self.alias, reply=verdict.model_dump_json(),
            )
        return self.make_loss([
            LossItem(a, scores[0], verdict.feedback_a.strip()),
            LossItem(b, scores[1], verdict.feedback_b.strip()),
        ])


class RankingLoss(_Comparative[RankingVerdict]):
    """An LLM ranks several outputs for the same task and gives feedback on each.

    Args:
        alias: Endpoint alias of the judge.
        criteria: What "better" means.
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).
    """

    name = "RankingLoss"

    def __init__(self, alias: str, criteria: str = "more correct, helpful and clear", *,
                 backward_alias: str | None = None) -> None:
        super().__init__(alias, (
            "Rank the candidate outputs for the same task, best first (" + criteria + "). "
            'Reply with JSON only: {"ranking": [candidate numbers, best first], '
            '"feedback": ["feedback for candidate 1", ...]}.'
        ), RankingVerdict, backward_alias=backward_alias)

    async def __call__(self, outputs: Any, target: Any = None) -> Loss:
        """Rank ``outputs`` (two or more candidates); ``target`` is an optional reference."""
        candidates = self._candidates(outputs, None)
        n = len(candidates)
        parts = [case_text(candidates[0], target, label="Candidate 1")]
        parts += [f"Candidate {i}:\n{as_text(c)}" for i, c in enumerate(candidates[1:], 2)]
        verdict = await self.ask("\n\n".join(parts), candidates[0])
        if sorted(verdict.ranking) != list(range(1, n + 1)) or len(verdict.feedback) != n:
            raise JudgeReplyError(
                f"RankingLoss (alias '{self.alias}') returned ranking {verdict.ranking} with "
                f"{len(verdict.feedback)} feedback entries; expected a permutation of 1..{n} "
                f"and {n} feedback entries.",
                alias=self.alias, reply=verdict.model_dump_json(),
            )
        position = {cand: pos for pos, cand in enumerate(verdict.ranking)}
        return self.make_loss([
            LossItem(c, 1.0 - position[i] / (n - 1), verdict.feedback[i - 1].strip())
            for i, c in enumerate(candidates, 1)
        ])
