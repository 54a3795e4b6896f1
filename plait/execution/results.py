"""What executors produce for each row, and what users receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchResult", "RowResult"]


@dataclass(slots=True)
class RowResult:
    """One row's result as an executor yields it.

    Attributes:
        index: The row's position in the input.
        output: The output, or None when the row failed.
        error: The row's error, or None.
        input_tokens: Tokens sent by the row's LLM calls.
        output_tokens: Tokens received by the row's LLM calls.
        latency: Seconds from the row's start to its end.
        record: Node values of the row (training mode only, for backward()).
        cost_usd: What the row's LLM calls cost (``plait.pricing`` prices; 0 for hits).
        cache_hits: The row's LLM calls answered from the response cache.
    """

    index: int
    output: Any = None
    error: BaseException | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency: float = 0.0
    record: dict[str, Any] | None = field(default=None, repr=False)
    cost_usd: float = 0.0
    cache_hits: int = 0


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One row of a streamed batch.

    Attributes:
        index: The row's position in the input batch.
        input: The row's input.
        output: The output, or None if the row failed.
        error: The error, or None if the row succeeded.
    """

    index: int
    input: Any
    output: Any
    error: BaseException | None

    @property
    def ok(self) -> bool:
        """True when the row succeeded."""
        return self.error is None
