"""Catching str methods called on strings that hold a placeholder, while forward() is traced.

``f"Q: {t}".replace("foo", "bar")`` is a plain ``str`` (Python builds f-strings itself), so
the tracer cannot record the call; it would run once, on the placeholder, and silently do
nothing to the real text. While forward() runs, a profile hook sees every call of a built-in
method: one made from user code on a string that holds a placeholder of this trace raises a
``TraceError`` at that line, before the method runs.

The hook is only installed once the trace has made a placeholder, and only when no other
profiler is active (``sys.getprofile()`` is None), so tracing never disturbs cProfile and
friends; the two-encoding comparison still applies then.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from collections.abc import Callable
from types import FrameType
from typing import Any

from plait.errors import TraceError

__all__ = ["StringGuard"]

_PLAIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Library code (stdlib, installed packages) is skipped when naming the user's line.
_LIBRARIES = tuple({os.path.abspath(sysconfig.get_paths()[key]) + os.sep
                    for key in ("stdlib", "platstdlib", "purelib", "platlib")})
_RE_FILE = re.__file__
# Methods that keep every placeholder whole, so the recorded graph is exact.
_SAFE = frozenset({"join", "__str__", "__add__", "__mul__", "__rmul__", "__getnewargs__",
                   "__sizeof__", "__reduce__", "__reduce_ex__"})


class StringGuard:
    """Refuses built-in methods called from user code on strings containing ``prefix``.

    ``start()`` is called when the trace makes its first placeholder, so a forward() that
    never formats a traced value pays nothing; ``stop()`` at the end of the trace.
    """

    def __init__(self, prefix: str, refuse: Callable[[TraceError], TraceError]) -> None:
        self._prefix = prefix
        self._refuse = refuse
        self._hook: Callable[..., Any] | None = None

    def start(self) -> None:
        """Install the hook (once, and only when no other profiler is active)."""
        if self._hook is not None or sys.getprofile() is not None:
            return
        prefix, refuse = self._prefix, self._refuse

        def hook(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename == _RE_FILE:
                # re.sub(pattern, repl, string), re.split(...), ...: the text is an argument.
                text = frame.f_locals.get("string")
                if isinstance(text, str) and str.find(text, prefix) >= 0 and not (
                    frame.f_back is not None
                    and frame.f_back.f_code.co_filename.startswith(_PLAIT_DIR)
                ):
                    name = f"re.{frame.f_code.co_name}"
                    raise refuse(TraceError(_message(name, frame.f_back or frame)))
                return
            if event != "c_call":
                return
            owner = getattr(arg, "__self__", None)
            if not isinstance(owner, str) or str.find(owner, prefix) < 0:
                return
            name = f".{getattr(arg, '__name__', '?')}"
            if name[1:] in _SAFE or frame.f_code.co_filename.startswith(_PLAIT_DIR):
                return
            raise refuse(TraceError(_message(name, frame)))

        self._hook = hook
        sys.setprofile(hook)

    def stop(self) -> None:
        """Remove the hook if it is still the active profile function."""
        if self._hook is not None and sys.getprofile() is self._hook:
            sys.setprofile(None)
        self._hook = None


def _message(name: str, frame: FrameType) -> str:
    return (
        f"Cannot call {name}() on a string that contains a traced value in forward() "
        f"({_where(frame)}): it would run once, on a placeholder, not on each row's text. "
        "Apply it to the value itself, which records it in the graph (t.replace('a', 'b'), "
        "f\"{t}\".split(',')), use a plait.functional op (F.render, F.strip, F.upper, ...) or "
        "an @plait.functional.op function, or do it in a leaf module (a Module with "
        "`leaf = True` runs its forward() on real values). For a prompt template, dedent or "
        "strip the template text first and insert the values after: "
        "F.render(textwrap.dedent(TEMPLATE), doc=doc)."
    )


def _where(frame: FrameType) -> str:
    """``file.py:line`` of the call, and of the user's line when the call is in a library."""
    here = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    outer: FrameType | None = frame
    while outer is not None:
        filename = os.path.abspath(outer.f_code.co_filename)
        if not filename.startswith((*_LIBRARIES, _PLAIT_DIR)):
            user = f"{os.path.basename(filename)}:{outer.f_lineno}"
            return here if user == here else f"{user}, in {here}"
        outer = outer.f_back
    return here
