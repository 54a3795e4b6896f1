"""Ray actor and task names show the pipeline (checked with the state API, which needs the
dashboard, so this runs in its own process with its own Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


def test_worker_and_task_names_show_the_pipeline() -> None:
    script = Path(__file__).with_name("_names_script.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=540, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["single"] == "[m] echo: L x / [m] echo: R x"
    assert result["batch"][2] == "[m] echo: L c / [m] echo: R c"
    workers = [n for n in result["actors"] if n.startswith("plait:worker:Fork:")]
    assert workers, result["actors"]
    names = [name for name, _ in result["tasks"]]
    # Single call: each LLM node was its own task, named after its module path.
    assert "plait:left" in names and "plait:right" in names
