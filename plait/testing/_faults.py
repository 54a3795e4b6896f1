"""Choosing which scripted ``Fault`` (if any) a request gets."""

from __future__ import annotations

import random
from collections.abc import Sequence

from plait.testing._config import Fault

__all__ = ["FaultPlan"]


class FaultPlan:
    """The live state of a list of faults: how often each has matched and fired.

    Args:
        faults: The faults, first match wins.
        seed: Seed for faults with a ``probability``.
    """

    def __init__(self, faults: Sequence[Fault], seed: int) -> None:
        self._faults = list(faults)
        self._seen = [0] * len(self._faults)
        self._fired = [0] * len(self._faults)
        self._rng = random.Random(seed)

    def __bool__(self) -> bool:
        return bool(self._faults)

    def pending(self) -> list[Fault]:
        """The faults that may still fire."""
        return [
            f for f, n in zip(self._faults, self._fired, strict=True)
            if f.limit is None or n < f.limit
        ]

    def pick(self, model: str, user_text: str) -> Fault | None:
        """The fault for a request to ``model`` with ``user_text``, or None."""
        chosen: Fault | None = None
        for i, fault in enumerate(self._faults):
            limit = fault.limit
            if limit is not None and self._fired[i] >= limit:
                continue
            if fault.model is not None and fault.model != model:
                continue
            if fault.match is not None and fault.match not in user_text:
                continue
            # Every matching rule counts the request, so "every N" stays true to its name
            # even when an earlier rule took this one.
            self._seen[i] += 1
            if chosen is None and self._fires(fault, self._seen[i]):
                self._fired[i] += 1
                chosen = fault
        return chosen

    def _fires(self, fault: Fault, seen: int) -> bool:
        if fault.every is not None and seen % fault.every != 0:
            return False
        if fault.probability is not None:
            return self._rng.random() < fault.probability
        return True
