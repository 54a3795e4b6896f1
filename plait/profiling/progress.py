"""Progress bars for runs: tqdm in terminals and notebooks, nothing at all elsewhere.

``make_progress`` returns either a tqdm-backed bar or a no-op object, so callers update it
unconditionally; a disabled bar costs one empty method call per row.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Protocol, Self, TextIO

__all__ = ["Progress", "make_progress"]


class Progress(Protocol):
    """A row counter that also shows how many rows failed."""

    def update(self, n: int = 1, failed: bool = False, cost_usd: float = 0.0) -> None:
        """Count ``n`` finished rows (``failed``: as failures) that cost ``cost_usd``."""
        ...

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _NullProgress:
    """The disabled bar: every method does nothing."""

    __slots__ = ()

    def update(self, n: int = 1, failed: bool = False, cost_usd: float = 0.0) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class _TqdmProgress:
    """A tqdm bar with the failure count in its postfix."""

    __slots__ = ("_bar", "_closed", "failed", "spent")

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._closed = False
        self.failed = 0
        self.spent = 0.0

    @property
    def count(self) -> int:
        """Rows counted so far."""
        return int(self._bar.n)

    def update(self, n: int = 1, failed: bool = False, cost_usd: float = 0.0) -> None:
        """Count ``n`` finished rows (``failed``: as failures) that cost ``cost_usd``.

        The postfix shows failures and, once anything was paid, the spend and the cost per
        row so far.
        """
        if failed:
            self.failed += n
        if cost_usd:
            self.spent += cost_usd
        if failed or cost_usd:
            # Only touch the postfix when it changes: set_postfix_str forces a refresh.
            self._bar.set_postfix_str(self.postfix(self._bar.n + n), refresh=False)
        self._bar.update(n)

    def postfix(self, rows: int) -> str:
        """"failed=2, $0.0123 ($0.00012/row)" (parts omitted while zero)."""
        parts: list[str] = []
        if self.failed:
            parts.append(f"failed={self.failed}")
        if self.spent:
            parts.append(f"${self.spent:.4f} (${self.spent / max(rows, 1):.6f}/row)")
        return ", ".join(parts)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if not self._closed:
            self._closed = True
            self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def make_progress(
    total: int | None, enabled: bool | None, desc: str, *, file: TextIO | None = None
) -> Progress:
    """Make a progress bar for ``total`` rows.

    Args:
        total: Rows expected, or None if unknown (the bar then counts without a percentage).
        enabled: True to show, False to hide, None for auto: shown only when stderr is a
            terminal or the code runs in a Jupyter/IPython kernel.
        desc: Label shown before the bar.
        file: Where a console bar writes (stderr by default).

    Returns:
        A ``Progress``; when disabled, a no-op object.

    Example:
        >>> with make_progress(total=100, enabled=False, desc="rows") as bar:
        ...     bar.update(failed=False)
    """
    if enabled is None:
        enabled = _stderr_is_tty() or _in_notebook()
    if not enabled:
        return _NullProgress()
    return _TqdmProgress(_tqdm_class()(total=total, desc=desc, file=file, dynamic_ncols=True))


def _tqdm_class() -> Any:
    # tqdm.auto picks the notebook widget when ipywidgets is usable and falls back to the
    # console bar itself; the guard covers tqdm builds without the auto module.
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - depends on the tqdm install
        from tqdm import tqdm
    return tqdm


def _stderr_is_tty() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _in_notebook() -> bool:
    """True inside a Jupyter kernel; never imports IPython (only looks if already loaded)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a half-initialised IPython must not break the run
        return False
    if shell is None:
        return False
    if type(shell).__name__ == "ZMQInteractiveShell":
        return True
    config = getattr(shell, "config", None)
    try:
        return config is not None and "IPKernelApp" in config
    except TypeError:
        return False
