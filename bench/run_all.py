"""Run every benchmark in turn; each writes its section of bench/RESULTS.md or its file.

Usage: .venv/bin/python bench/run_all.py [--quick] [--only headline,fanout,...]

``make bench`` runs this. ``--quick`` shrinks the memory bench (2,000 and 10,000 streamed
rows, no list-input sizes) for a loaded machine; the published figures use the defaults.
Benchmarks are scripts, never tests: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ORDER = ["headline", "fanout", "ratelimited", "memory", "overheads", "ray_fanout",
         "ray_dataset", "leases", "local_model", "autobatch", "client_cpu"]
EXTRA_ARGS = {"overheads": ["--write"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated: " + ",".join(ORDER))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else ORDER
    failed: list[str] = []
    for name in chosen:
        if name not in ORDER:
            parser.error(f"unknown bench {name!r}; choose from {ORDER}")
        cmd = [sys.executable, str(BENCH / f"bench_{name}.py"), *EXTRA_ARGS.get(name, [])]
        if name == "memory" and args.quick:
            cmd += ["--sizes", "2000,10000", "--no-list"]
        print(f"\n=== {name}: {' '.join(cmd[1:])} (load {os.getloadavg()[0]:.2f})", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd, cwd=BENCH.parent).returncode != 0:
            failed.append(name)
        print(f"=== {name} took {time.perf_counter() - start:.0f}s", flush=True)
    if failed:
        print(f"\nFAILED: {failed}")
        return 1
    print("\nAll benchmarks ran; see bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
