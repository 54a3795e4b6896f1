"""Progress bars: disabled is a no-op, enabled counts failures, auto-detection."""

from __future__ import annotations

import io
import sys
import types

import pytest

from plait.profiling import make_progress
from plait.profiling.progress import _in_notebook, _NullProgress, _TqdmProgress


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_disabled_progress_is_a_no_op() -> None:
    bar = make_progress(total=3, enabled=False, desc="rows")
    assert isinstance(bar, _NullProgress)
    with bar:
        bar.update()
        bar.update(2, failed=True)
    bar.close()


def test_enabled_progress_counts_and_shows_failures() -> None:
    out = io.StringIO()
    with make_progress(total=5, enabled=True, desc="rows", file=out) as bar:
        assert isinstance(bar, _TqdmProgress)
        bar.update()
        bar.update(2, failed=True)
        assert (bar.count, bar.failed) == (3, 2)
    bar.close()  # closing twice is fine
    text = out.getvalue()
    assert "rows" in text and "failed=2" in text and "3/5" in text


def test_unknown_total_still_counts() -> None:
    out = io.StringIO()
    bar = make_progress(total=None, enabled=True, desc="rows", file=out)
    bar.update(4)
    bar.close()
    assert "4" in out.getvalue()


def test_auto_is_off_without_tty_or_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(make_progress(total=1, enabled=None, desc="rows"), _NullProgress)


def test_auto_is_on_with_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys, "stderr", _TTY())
    bar = make_progress(total=1, enabled=None, desc="rows")
    assert isinstance(bar, _TqdmProgress)
    bar.close()


def fake_ipython(monkeypatch: pytest.MonkeyPatch, shell: object) -> None:
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_notebook_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not _in_notebook()  # IPython not loaded: never imported just to check

    fake_ipython(monkeypatch, None)  # IPython imported, but no shell running
    assert not _in_notebook()

    class TerminalInteractiveShell:
        config: dict[str, object] = {}

    fake_ipython(monkeypatch, TerminalInteractiveShell())
    assert not _in_notebook()

    class ZMQInteractiveShell:
        pass

    fake_ipython(monkeypatch, ZMQInteractiveShell())
    assert _in_notebook()

    class Shell:  # e.g. Colab: another class name, but a kernel app in its config
        config = {"IPKernelApp": {}}

    fake_ipython(monkeypatch, Shell())
    assert _in_notebook()
