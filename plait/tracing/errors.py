"""The one way tracing code reports what forward() cannot do with a traced value."""

from __future__ import annotations

from typing import NoReturn

from plait.errors import TraceError
from plait.tracing.context import user_source_location

__all__ = ["fail"]


def fail(action: str, hint: str) -> NoReturn:
    """Raise a ``TraceError`` naming the user's line: "Cannot <action> a traced value"."""
    where = user_source_location()
    raise TraceError(f"Cannot {action} a traced value in forward() ({where}). {hint}")
