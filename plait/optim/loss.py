"""``Loss`` (scores + feedback on outputs, with ``backward()``) and the ``LossFn`` base class.

A loss function is awaited on one output or a batch (a plain ``list`` of outputs, as
``await pipeline([x1, x2])`` returns) and gives a ``Loss``:

    loss = await loss_fn(out, target=y)            # one output
    loss = await loss_fn(outs, target=[y1, y2])    # a batch: one target per output
    await loss.backward()                          # feedback -> Parameters

A single output that is itself a list is a ``RecordedList`` in training mode, so it is not
mistaken for a batch; in eval mode wrap it: ``loss_fn([out])``.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self, cast

from pydantic import BaseModel

from plait.errors import ConfigError
from plait.optim._errors import BackwardError
from plait.optim.backward import BackwardLLM, BackwardPlan, propagate
from plait.optim.order import note_graph, position_of
from plait.optim.record import ForwardRecord, record_of, release_record, was_released

__all__ = ["BackwardReport", "Loss", "LossFn", "LossItem", "as_text", "bound_resources"]


@dataclass
class LossItem:
    """The score and feedback of one output.

    Attributes:
        output: The output that was scored.
        score: In [0, 1]; higher is better.
        feedback: What should change (may be empty when nothing should).
    """

    output: Any
    score: float
    feedback: str


@dataclass
class BackwardReport:
    """What one ``loss.backward()`` did.

    Attributes:
        rows: Outputs whose feedback was propagated.
        parameters: Dotted name (or description) -> feedback items delivered to it.
        llm_calls: Backward LLM calls made (0 in template mode).
    """

    rows: int
    parameters: dict[str, int] = field(default_factory=dict[str, int])
    llm_calls: int = 0


class Loss:
    """Scores and feedback on one or more outputs; ``backward()`` sends the feedback back.

    Attributes:
        items: One ``LossItem`` per output.
        name: The loss function's name.
        backward_alias: Default alias of the backward LLM (None: templates).
    """

    def __init__(self, items: Sequence[LossItem], *, name: str,
                 backward_alias: str | None = None, resources: Any = None) -> None:
        self.items = list(items)
        self.name = name
        self.backward_alias = backward_alias
        self._resources = resources

    @property
    def score(self) -> float:
        """Mean score over the outputs, in [0, 1]."""
        return sum(i.score for i in self.items) / len(self.items) if self.items else 0.0

    @property
    def scores(self) -> list[float]:
        """The score of each output."""
        return [i.score for i in self.items]

    @property
    def feedback(self) -> str:
        """The feedback text (numbered per output for a batch)."""
        if len(self.items) == 1:
            return self.items[0].feedback
        return "\n".join(f"[{n}] {i.feedback}" for n, i in enumerate(self.items) if i.feedback)

    async def backward(self, *, alias: str | None = None, resources: Any = None) -> BackwardReport:
        """Propagate each output's feedback through its forward graph to the Parameters.

        Feedback accumulates on the Parameters (``Parameter.feedback``) until
        ``optimizer.step()`` or ``zero_feedback()``. Every forward record used is released.

        Args:
            alias: Endpoint alias of an LLM that turns output feedback into feedback for
                prompts and inputs; default the loss's ``backward_alias``; None uses templates.
            resources: Resources for that LLM; default the loss's, then the pipeline's.

        Raises:
            BackwardError: An output has no forward record (eval mode) or was already used.
        """
        records = [self._record(n, item.output) for n, item in enumerate(self.items)]
        alias = alias or self.backward_alias
        llm = None
        if alias is not None:
            llm = BackwardLLM(alias, resources or self._resources or bound_resources(records[0]))
        try:
            plans: dict[tuple[int, int], BackwardPlan] = {}
            for rec in records:
                key = (id(rec.module), id(rec.graph))
                if key not in plans:
                    note_graph(rec.module, rec.graph)
                    plans[key] = BackwardPlan.of(rec)
            results = await asyncio.gather(*(
                propagate(rec, item.feedback, llm, plans[id(rec.module), id(rec.graph)])
                for rec, item in zip(records, self.items, strict=True) if item.feedback))
        finally:
            for item in self.items:
                release_record(item.output)
        report = BackwardReport(rows=len(results), llm_calls=llm.calls if llm else 0)
        for deliveries in results:  # row order: deterministic Parameter.feedback lists
            for param, text in deliveries:
                param.accumulate_feedback(text)
                position = position_of(param)
                key = position.name if position else (param.description or "parameter")
                report.parameters[key] = report.parameters.get(key, 0) + 1
        return report

    def _record(self, n: int, output: Any) -> ForwardRecord:
        rec = record_of(output)
        if rec is not None and not rec.released:
            return rec
        what = f"output {n} of {self.name} ({type(output).__name__})"
        if rec is not None or was_released(output):
            raise BackwardError(
                f"backward() was already called for {what}; its forward record was released. "
                "Run the pipeline again (out = await pipeline(x)) for a new training step."
            )
        if output is None or isinstance(output, bool):
            raise BackwardError(
                f"{what} cannot carry a forward record (None and bool outputs cannot). Return "
                "a string, dict or pydantic model from forward() to train the pipeline."
            )
        raise BackwardError(
            f"{what} has no forward record: the pipeline ran in eval mode, which records "
            "nothing. Call pipeline.train() before the forward pass (out = await "
            "pipeline(x)), then compute the loss and call loss.backward()."
        )

    def __repr__(self) -> str:
        return f"Loss({self.name}, score={self.score:.3f}, outputs={len(self.items)})"


class LossFn(ABC):
    """Base class of loss functions: ``await loss_fn(outputs, target=...) -> Loss``.

    Args:
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).
    """

    name = "loss"

    def __init__(self, *, backward_alias: str | None = None) -> None:
        self.backward_alias = backward_alias
        self.resources: Any = None

    def bind(self, resources: Any) -> Self:
        """Resources for this loss's LLM calls (default: the scored pipeline's resources)."""
        self.resources = resources
        return self

    async def __call__(self, outputs: Any, target: Any = None) -> Loss:
        """Score ``outputs`` (one output, or a plain list as a batch) against ``target``."""
        if type(outputs) is list:
            batch = cast("list[Any]", outputs)
            targets = _targets(self.name, target, len(batch))
            items = list(await asyncio.gather(*(
                self.score(o, t) for o, t in zip(batch, targets, strict=True))))
        else:
            items = [await self.score(outputs, target)]
        return self.make_loss(items)

    def make_loss(self, items: Sequence[LossItem]) -> Loss:
        """A ``Loss`` of ``items`` carrying this function's backward settings."""
        return Loss(items, name=self.name, backward_alias=self.backward_alias,
                    resources=self.resources)

    @abstractmethod
    async def score(self, output: Any, target: Any) -> LossItem:
        """Score one output."""


def _targets(name: str, target: Any, count: int) -> list[Any]:
    if target is None:
        return [None] * count
    if isinstance(target, list | tuple) and len(target) == count:  # pyright: ignore[reportUnknownArgumentType]
        return list(target)  # pyright: ignore[reportUnknownArgumentType]
    raise ConfigError(
        f"{name} got a batch of {count} outputs but target={target!r}. Pass one target per "
        f"output (target=[y1, ..., y{count}]) or none."
    )


def bound_resources(output_or_record: Any) -> Any:
    """The resources bound to the pipeline that produced an output (None if unknown)."""
    rec = output_or_record if isinstance(output_or_record, ForwardRecord) else record_of(
        output_or_record)
    if rec is None:
        return None
    bound: dict[str, Any] | None = rec.module.__dict__.get("_bound")
    return bound.get("resources") if bound else None


def as_text(value: Any) -> str:
    """A value as text for a judge's prompt (JSON for models and containers)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=1)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, indent=1, default=str)
    return str(value)
