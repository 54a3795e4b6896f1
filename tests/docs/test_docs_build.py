"""The docs site builds offline and strictly (a broken reference or page fails the suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_builds_strict_and_offline(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, (
        "mkdocs build --strict failed (install the docs extra: make venv, or "
        f"pip install -e '.[docs]'):\n{done.stderr[-4000:]}"
    )
    for page in ("index.html", "guide/functional.html", "reference/values.html"):
        assert (tmp_path / page).is_file(), page
    reference = (tmp_path / "reference/functional.html").read_text()
    assert "parse_structured" in reference and "unwrap_or" in reference
