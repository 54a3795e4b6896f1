"""``CompositeLoss``: several losses on the same outputs, combined with weights."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Self

from plait.errors import ConfigError
from plait.optim.loss import Loss, LossFn, LossItem

__all__ = ["CompositeLoss"]


class CompositeLoss(LossFn):
    """A weighted mean of losses; feedback from each part, labelled with its weight.

    Args:
        parts: ``(loss_fn, weight)`` pairs; weights >= 0 with a positive sum. Parts run
            concurrently on the same outputs and targets.
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).

    Example:
        >>> loss_fn = CompositeLoss([(VerifierLoss(exact), 0.7), (LLMJudge("j", "clear"), 0.3)])
    """

    name = "CompositeLoss"

    def __init__(self, parts: Sequence[tuple[LossFn, float]], *,
                 backward_alias: str | None = None) -> None:
        super().__init__(backward_alias=backward_alias)
        checked = [(fn, float(w)) for fn, w in parts]
        if not checked or any(w < 0 for _, w in checked) or sum(w for _, w in checked) <= 0:
            raise ConfigError(
                f"CompositeLoss needs (loss_fn, weight) pairs with weights >= 0 and a positive "
                f"sum, got {[(getattr(f, 'name', f), w) for f, w in checked]}."
            )
        for fn, _ in checked:
            if not isinstance(fn, LossFn):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ConfigError(f"CompositeLoss part {fn!r} is not a loss function (LossFn).")
        total = sum(w for _, w in checked)
        self.parts = [(fn, w / total) for fn, w in checked]

    def bind(self, resources: Any) -> Self:
        """Resources for this loss and for every part that has none of its own."""
        super().bind(resources)
        for fn, _ in self.parts:
            if fn.resources is None:
                fn.bind(resources)
        return self

    async def __call__(self, outputs: Any, target: Any = None) -> Loss:
        """Run every part on ``outputs`` and combine them per output."""
        losses = await asyncio.gather(*(fn(outputs, target) for fn, _ in self.parts))
        count = len(losses[0].items)
        items: list[LossItem] = []
        for n in range(count):
            score = sum(w * loss.items[n].score for (_, w), loss in zip(
                self.parts, losses, strict=True))
            notes = [f"[{fn.name}, weight {w:.2f}, score {loss.items[n].score:.2f}] "
                     f"{loss.items[n].feedback}"
                     for (fn, w), loss in zip(self.parts, losses, strict=True)
                     if loss.items[n].feedback]
            items.append(LossItem(losses[0].items[n].output, score, "\n".join(notes)))
        return self.make_loss(items)

    async def score(self, output: Any, target: Any) -> LossItem:
        """Score one output with every part."""
        return (await self(output, target)).items[0]
