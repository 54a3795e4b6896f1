"""``run_dataset(..., budget_usd=)``: chunks start only while their reservation fits.

On Ray the driver admits work chunk by chunk (rows inside an admitted chunk all start). A
chunk reserves its rows' pessimistic bound (``plait.pricing.RowBound``; a retried part, the
bound of its failed rows). A chunk starts only if the spend the workers reported + the
reservations of chunks in flight + its own reservation fit the budget; the spend already
includes finished rows of chunks in flight, so the check errs on the side of stopping early.
Once a chunk does not fit, no further chunk starts; the rest stays uncommitted for a rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plait.io import Chunk, ColumnMap, OutputDir, chunk_rows
from plait.io._retry import failed_rows
from plait.pricing import BudgetReport, RowBound

if TYPE_CHECKING:
    from plait_ray.dataset._driver import Work

__all__ = ["BudgetGate"]


class BudgetGate:
    """The driver's admission of chunks under ``budget_usd``.

    Args:
        limit_usd: The budget.
        bound: Prices rows before they run.
        mapping: forward() argument -> column (to read a chunk's rows).
        out: The output directory (retried parts are read from it).
    """

    def __init__(self, limit_usd: float, bound: RowBound, mapping: ColumnMap,
                 out: OutputDir) -> None:
        from plait.pricing import Budget

        Budget(limit_usd)  # checks the value
        self.limit_usd = float(limit_usd)
        self._bound = bound
        self._mapping = mapping
        self._out = out
        self._reserved: dict[int, float] = {}
        # Committed chunks whose cost the workers' totals may not show yet: kept reserved
        # until the next poll (started after the commit) reports the spend.
        self._settling: list[float] = []
        self.spent_usd = 0.0
        self.rows_done = 0
        self.stopped = False

    def observe(self, ok: int, failed: int, usd: float) -> None:
        """The workers' latest totals for this call."""
        self.rows_done = max(self.rows_done, ok + failed)
        self.spent_usd = max(self.spent_usd, usd)
        self._settling.clear()

    def _reservation(self, work: Work) -> float:
        if isinstance(work, Chunk):
            rows = chunk_rows(work, self._mapping)
        else:  # a committed part's failed rows run again: read them as the worker will
            _, rows = failed_rows(self._out, work.start, work.end, self._mapping)
        return sum(self._bound.row(args, kwargs) for _, args, kwargs in rows)

    def admit(self, work: Work) -> bool:
        """Reserve for ``work``; False (and stop for good) when it does not fit."""
        if self.stopped:
            return False
        need = self._reservation(work)
        held = sum(self._reserved.values()) + sum(self._settling)
        if self.spent_usd + held + need > self.limit_usd:
            self.stopped = True
            return False
        self._reserved[id(work)] = need
        return True

    def release(self, work: Work) -> None:
        """``work`` was committed: its reservation ends at the next poll of the spend."""
        need = self._reserved.pop(id(work), None)
        if need is not None:
            self._settling.append(need)

    def report(self, rows_not_started: int) -> BudgetReport:
        """How the budget ended."""
        return BudgetReport(self.limit_usd, self.spent_usd, self.rows_done, rows_not_started,
                            self.stopped)


def gated(on_done: Callable[[Work, Any], None], gate: BudgetGate | None
          ) -> Callable[[Work, Any], None]:
    """``on_done`` that also releases the chunk's reservation."""
    if gate is None:
        return on_done

    def both(work: Work, done: Any) -> None:
        gate.release(work)
        on_done(work, done)

    return both
