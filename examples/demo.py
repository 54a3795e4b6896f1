"""`make demo`: a few hundred rows through a two-call pipeline on a local Ray.

Writes ./out/demo/ (Parquet) and ./out/demo-trace.json (open in https://ui.perfetto.dev),
then prints the summary. Offline via the built-in loopback server unless OPENAI_API_KEY is set.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    shutil.rmtree(out / "demo", ignore_errors=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.argv = [sys.argv[0], "--output", str(out / "demo"), "--rows", "300",
                "--profile", str(out / "demo-trace.json")]
    example = __import__("06_ray_dataset")
    example.main()
    print(f"trace:   {out / 'demo-trace.json'} (open in https://ui.perfetto.dev)")


if __name__ == "__main__":
    main()
