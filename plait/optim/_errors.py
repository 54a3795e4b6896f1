"""Errors of the optimization loop; all derive from ``PlaitError``.

```
PlaitError
└── OptimizationError      something in loss / backward / step went wrong
    ├── BackwardError      backward() cannot run (eval-mode output, record already released)
    └── JudgeReplyError    an LLM judge, backward or optimizer reply could not be parsed
```
"""

from __future__ import annotations

from plait.errors import PlaitError

__all__ = ["BackwardError", "JudgeReplyError", "OptimizationError"]


class OptimizationError(PlaitError):
    """A loss, backward pass or optimizer step failed; the message names the fix."""


class BackwardError(OptimizationError):
    """``loss.backward()`` cannot run for an output (no forward record, or already used)."""


class JudgeReplyError(OptimizationError):
    """An LLM (judge, backward or optimizer) replied with something that is not the JSON asked.

    Attributes:
        alias: The endpoint alias that replied.
        reply: The reply text (first 500 characters).
    """

    def __init__(self, message: str, *, alias: str, reply: str) -> None:
        super().__init__(message)
        self.alias = alias
        self.reply = reply[:500]
