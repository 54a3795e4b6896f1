"""What a dataset run reports when it ends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plait.pricing import BudgetReport

__all__ = ["DatasetSummary"]


@dataclass(frozen=True)
class DatasetSummary:
    """The outcome of ``run_dataset``.

    ``rows``, ``errors`` and the token counts cover the whole output directory (rows committed
    by earlier, resumed runs included); ``rows_run`` and ``cost`` cover this call only.

    Attributes:
        rows: Rows in the output.
        errors: Output rows whose ``error`` is set.
        input_tokens: Input tokens of every output row.
        output_tokens: Output tokens of every output row.
        cost: Estimated cost of this call's requests (from the endpoints' prices).
        wall_time: Seconds this call took.
        output: The output directory.
        rows_run: Rows this call ran (the rest were already committed).
        budget: With ``budget_usd``: spent, rows done and rows not started, or None.
    """

    rows: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float
    wall_time: float
    output: Path
    rows_run: int = 0
    budget: BudgetReport | None = None

    def format(self) -> str:
        """A short multi-line report for terminals."""
        rate = self.rows_run / self.wall_time if self.wall_time > 0 else 0.0
        return "\n".join([
            f"rows:    {self.rows:,} in output ({self.rows_run:,} run now, {rate:,.1f} rows/s)",
            f"errors:  {self.errors:,}",
            f"tokens:  {self.input_tokens:,} in / {self.output_tokens:,} out",
            f"cost:    ${self.cost:,.4f}",
            f"time:    {self.wall_time:,.1f} s",
            f"output:  {self.output}",
            *([f"budget:  {self.budget.format()}"] if self.budget is not None else []),
        ])
