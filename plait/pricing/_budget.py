"""Holding a run to ``budget_usd``: rows start only while their reservation fits.

Before a row starts it reserves what it may cost; when it ends, the reservation is released
and its real cost (priced per call from the reported usage) is added to the spend. A row
starts only if ``spent + reserved + its reservation <= budget``; once one does not fit, no
further row starts (rows already running finish, so a run never abandons paid work), and
the rows left are reported as not started, to be run by a later call (with
``checkpoint_dir``, finished rows are not paid again).

A row's reservation is the pessimistic bound of its LLM calls (``RowBound``: prompt tokens
by the ~4 characters/token approximation, plus ``max_tokens`` or 1,024 output tokens per
call, at the endpoint's price). Observed costs are never used instead: a row of cache hits
costs $0 and a later row can be costlier than every earlier one, so only the bound keeps the
spend under the budget (it holds while the provider honours ``max_tokens``). What the bound
over-reserves is released when the row ends: at most the rows in flight are held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plait.errors import ConfigError

__all__ = ["Budget", "BudgetReport"]


@dataclass(frozen=True)
class BudgetReport:
    """How a budgeted run ended (``RunReport.budget``).

    Attributes:
        budget_usd: The budget.
        spent_usd: What the finished rows cost.
        rows_done: Rows that ran (succeeded or failed).
        rows_not_started: Rows held back because their reservation did not fit.
        stopped: True when the budget stopped the run before its last row.
    """

    budget_usd: float
    spent_usd: float
    rows_done: int
    rows_not_started: int
    stopped: bool

    def format(self) -> str:
        """One line for people."""
        end = ("stopped by the budget: rerun with a larger budget_usd (and the same "
               "checkpoint_dir) to run the rest" if self.stopped else "within budget")
        return (f"budget ${self.budget_usd:,.4f}: spent ${self.spent_usd:,.4f}, "
                f"{self.rows_done:,} rows done, {self.rows_not_started:,} not started; {end}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"budget_usd": self.budget_usd, "spent_usd": self.spent_usd,
                "rows_done": self.rows_done, "rows_not_started": self.rows_not_started,
                "stopped": self.stopped}


class Budget:
    """The spend of one run against its limit.

    Args:
        limit_usd: The budget, > 0.
    """

    def __init__(self, limit_usd: float) -> None:
        if (isinstance(limit_usd, bool) or not isinstance(limit_usd, int | float)  # pyright: ignore[reportUnnecessaryIsInstance]
                or not limit_usd > 0):
            raise ConfigError(f"budget_usd must be a number > 0, got {limit_usd!r}. Use None "
                              "for no budget.")
        self.limit_usd = float(limit_usd)
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.rows_done = 0
        self.rows_not_started = 0
        self.stopped = False

    def reservation(self, bound: float) -> float:
        """What a row reserves: its pessimistic bound (see the module docstring)."""
        return bound

    def admit(self, reservation: float) -> bool:
        """Reserve ``reservation`` for a row about to start; False (and stop) if it won't fit."""
        if self.stopped:
            return False
        if self.spent_usd + self.reserved_usd + reservation > self.limit_usd:
            self.stopped = True
            return False
        self.reserved_usd += reservation
        return True

    def settle(self, reservation: float, cost: float) -> None:
        """A row ended: release its reservation, add what it really cost."""
        self.reserved_usd = max(0.0, self.reserved_usd - reservation)
        self.spent_usd += cost
        self.rows_done += 1

    def report(self) -> BudgetReport:
        """The budget's state now."""
        return BudgetReport(self.limit_usd, self.spent_usd, self.rows_done,
                            self.rows_not_started, self.stopped)
