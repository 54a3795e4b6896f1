"""How tracing reports what forward() cannot do with a traced value."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, NoReturn

from plait.errors import TraceError
from plait.tracing.compare import WHAT_TO_DO
from plait.tracing.context import active_tracer, user_source_location
from plait.tracing.encoding import looks_like_placeholder

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["fail", "leak_error", "wrap_user_error"]


def fail(action: str, hint: str) -> NoReturn:
    """Raise a ``TraceError`` naming the user's line: "Cannot <action> a traced value"."""
    where = user_source_location()
    error = TraceError(f"Cannot {action} a traced value in forward() ({where}). {hint}")
    tracer = active_tracer()
    if tracer is not None:
        tracer.refuse(error)  # still fails the trace if forward() catches and ignores it
    raise error


def leak_error(where: str) -> TraceError:
    """A placeholder in ``where`` was cut, changed or escaped (or kept from another trace)."""
    return TraceError(
        f"{where} contains a traced value that was cut or changed as a string (at "
        f"{user_source_location()}), or one kept from an earlier trace. {WHAT_TO_DO}"
    )


def wrap_user_error(module: Module, exc: Exception, second: bool) -> TraceError:
    """A user exception raised while tracing, as a TraceError naming the line and the fix."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/plait/" not in f.filename]
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    if second or looks_like_placeholder(str(exc)):
        # It ran with one placeholder spelling and failed with the other: the line treats the
        # text of a traced value as a template, a number or code.
        hint = (
            "This line depends on the text of a traced value (for example str.format() or % "
            "applied to a string that contains one, int(), or a parser). " + WHAT_TO_DO
        )
    else:
        hint = (
            "While tracing, values returned by modules are placeholders, not strings: Python "
            "functions that need the real text (str.join, json.dumps, len, slicing, int(...)) "
            "cannot run on them. Use f-strings or `+` to build prompts, index structured "
            "outputs with [..] or .field, and put other processing in a @plait.functional.op "
            "function or a leaf module (leaf = True)."
        )
    message = str(exc)
    if len(message) > 300:
        message = message[:297] + "..."
    return TraceError(
        f"{type(module).__name__}.forward() failed while tracing at {where}: "
        f"{type(exc).__name__}: {message}. {hint}"
    )
