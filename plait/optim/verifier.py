"""``VerifierLoss``: a programmatic check (exact match, unit test, regex ...) as a loss."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from plait.errors import ConfigError
from plait.optim.loss import LossFn, LossItem

__all__ = ["VerifierLoss"]

VerifierResult = tuple[bool | float, str]


class VerifierLoss(LossFn):
    """Score outputs with a Python function returning ``(passed_or_score, feedback)``.

    Args:
        fn: ``fn(output, target) -> (bool | float, str)`` (may be async). ``True`` scores 1,
            ``False`` 0; a float must be in [0, 1]. The text is the feedback (empty: none).
        name: Name shown in reports.
        backward_alias: Alias of the LLM that ``loss.backward()`` uses (None: templates).

    Example:
        >>> def exact(out, target):
        ...     ok = out.strip() == target
        ...     return ok, "" if ok else f"Expected {target!r}, got {out!r}."
        >>> loss = await VerifierLoss(exact)(out, target="Paris")
    """

    def __init__(
        self,
        fn: Callable[[Any, Any], VerifierResult | Awaitable[VerifierResult]],
        *,
        name: str | None = None,
        backward_alias: str | None = None,
    ) -> None:
        super().__init__(backward_alias=backward_alias)
        if not callable(fn):
            raise ConfigError(f"VerifierLoss needs a function (output, target) -> (score, "
                              f"feedback), got {fn!r}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "verifier")

    async def score(self, output: Any, target: Any) -> LossItem:
        """Run the verifier on one output."""
        result = self.fn(output, target)
        if inspect.isawaitable(result):
            result = await result
        value, feedback = _check(self.name, result)
        return LossItem(output=output, score=value, feedback=feedback)


def _check(name: str, result: Any) -> tuple[float, str]:
    if not (isinstance(result, tuple) and len(result) == 2):  # pyright: ignore[reportUnknownArgumentType]
        raise ConfigError(
            f"Verifier {name!r} returned {result!r}; it must return (bool | float, str), e.g. "
            "return ok, 'what is wrong'."
        )
    value, feedback = result  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, bool):
        score = 1.0 if value else 0.0
    elif isinstance(value, int | float) and 0.0 <= value <= 1.0:
        score = float(value)
    else:
        raise ConfigError(
            f"Verifier {name!r} returned score {value!r}; use a bool or a float in [0, 1]."
        )
    if not isinstance(feedback, str):
        raise ConfigError(f"Verifier {name!r} returned feedback {feedback!r}; it must be a str.")
    return score, feedback
