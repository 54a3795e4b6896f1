"""Which tracer is active, and where in the user's code we are."""

from __future__ import annotations

import contextvars
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plait.tracing.tracer import Tracer

__all__ = ["active_tracer", "user_source_location"]

_ACTIVE: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar(
    "plait_active_tracer", default=None
)
_PLAIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def active_tracer() -> Tracer | None:
    """The tracer recording the current forward(), or None outside tracing."""
    return _ACTIVE.get()


def set_active_tracer(tracer: Tracer | None) -> contextvars.Token[Tracer | None]:
    """Make ``tracer`` the active one; returns the token to restore the previous one."""
    return _ACTIVE.set(tracer)


def reset_active_tracer(token: contextvars.Token[Tracer | None]) -> None:
    """Restore the tracer that was active before ``set_active_tracer``."""
    _ACTIVE.reset(token)


def user_source_location() -> str:
    """``file.py:line`` of the innermost frame outside the plait package."""
    frame = sys._getframe(1)  # pyright: ignore[reportPrivateUsage]
    inside = _PLAIT_DIR + os.sep
    while frame is not None:
        filename = frame.f_code.co_filename
        # co_filename is almost always absolute; abspath() would cost more than the rest of
        # recording a node, so it is only called for a relative name.
        if not filename.startswith(inside) and (
            os.path.isabs(filename) or not os.path.abspath(filename).startswith(inside)
        ):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"
