"""Overhead of profiling and checkpointing on the fan-out benchmark.

Run: .venv/bin/python bench/bench_overheads.py [--rows N] [--repeats R] [--write]

Per row: 4 independent calls on alias ``fast`` and 1 call on ``smart`` aggregating them. The
loopback server runs in its own process (``LLMServer.spawn``) with 50 ms latency; ``fast`` has
max_concurrent=32 and ``smart`` 8, so 1,000 rows need at least 4,000 x 50 ms / 32 = 6.25 s on
``fast`` (and the same on ``smart``): the physical limit. Modes, interleaved R times so a
burst of load on the shared machine hits every mode alike:

* plain:       nothing on;
* profile:     ``profile=True`` (events recorded, trace and summary written at the end);
* checkpoint:  ``checkpoint_dir=`` a fresh directory (every node and row persisted).

Overhead = median wall time of the mode / median wall time of plain. The driver's CPU
seconds (``time.process_time``, flush threads included) are reported too: on a loaded shared
machine they show the cost of a mode more steadily than wall time does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plait import LLMInference, Module
from plait.resources import ResourceConfig
from plait.testing import LLMServer, SpawnedServer

LATENCY = 0.05
FAST_SLOTS, SMART_SLOTS = 32, 8
RESULTS = Path(__file__).with_name("results_overheads.md")
MODES = ("plain", "profile", "checkpoint")
KILL_SECTION = "## Kill test"


class FanOut(Module):
    """Four independent views of the text on ``fast``, merged by one call on ``smart``."""

    def __init__(self) -> None:
        super().__init__()
        self.facts = LLMInference(alias="fast", system_prompt="List the facts.")
        self.tone = LLMInference(alias="fast", system_prompt="Describe the tone.")
        self.risks = LLMInference(alias="fast", system_prompt="List the risks.")
        self.title = LLMInference(alias="fast", system_prompt="Write a title.")
        self.merge = LLMInference(alias="smart", system_prompt="Merge the notes.")

    def forward(self, text: str) -> str:
        notes = [self.facts(text), self.tone(text), self.risks(text), self.title(text)]
        return self.merge(f"{notes[0]}\n{notes[1]}\n{notes[2]}\n{notes[3]}")


def resources(server: SpawnedServer) -> ResourceConfig:
    fast = server.resource_config({"fast": "m-fast"}, max_concurrent=FAST_SLOTS)
    smart = server.resource_config({"smart": "m-smart"}, max_concurrent=SMART_SLOTS)
    return ResourceConfig(endpoints={**fast.endpoints, **smart.endpoints})


async def one_run(config: ResourceConfig, rows: list[str], mode: str, scratch: Path,
                  index: int) -> tuple[float, float]:
    settings: dict[str, Any] = {"resources": config, "progress": False}
    if mode == "profile":
        settings |= {"profile": True, "profile_path": scratch / f"trace-{index}.json"}
    elif mode == "checkpoint":
        settings |= {"checkpoint_dir": scratch / f"ckpt-{index}"}
    pipeline = FanOut().bind(**settings)
    started, cpu = time.perf_counter(), time.process_time()
    outputs = await pipeline(rows)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if len(outputs) != len(rows):
        raise RuntimeError(f"{mode}: {len(outputs)} outputs for {len(rows)} rows")
    return wall, cpu


def measure(n_rows: int, repeats: int) -> dict[str, list[tuple[float, float]]]:
    rows = [f"document {i}: the quarterly numbers and what they mean" for i in range(n_rows)]
    walls: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    with LLMServer.spawn(latency=LATENCY) as server, tempfile.TemporaryDirectory() as tmp:
        config = resources(server)
        asyncio.run(one_run(config, rows[:50], "plain", Path(tmp), -1))  # warm up
        for rep in range(repeats):
            for mode in MODES:
                wall, cpu = asyncio.run(one_run(config, rows, mode, Path(tmp), rep))
                walls[mode].append((wall, cpu))
                print(f"  rep {rep} {mode:<10} {wall:6.2f} s wall {cpu:6.2f} s cpu", flush=True)
    return walls


def report(walls: dict[str, list[tuple[float, float]]], n_rows: int, repeats: int) -> str:
    limit = n_rows * 4 * LATENCY / FAST_SLOTS
    base = statistics.median(w for w, _ in walls["plain"])
    base_cpu = statistics.median(c for _, c in walls["plain"])
    lines = [
        "## plait overheads: profiling and checkpointing (fan-out benchmark)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- machine: nproc={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        f"- load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(the box is shared with other work)",
        f"- command: `.venv/bin/python bench/bench_overheads.py --rows {n_rows} "
        f"--repeats {repeats} --write`",
        f"- workload: {n_rows} rows x (4 calls on fast + 1 on smart), server in a child process "
        f"with {LATENCY * 1000:.0f} ms latency, fast max_concurrent={FAST_SLOTS}, smart "
        f"{SMART_SLOTS}; physical limit {limit:.2f} s",
        "",
        "| mode | median wall (s) | min (s) | runs (s) | wall vs plain | vs limit | "
        "driver cpu (s) | cpu vs plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        values = [w for w, _ in walls[mode]]
        med, cpu = statistics.median(values), statistics.median(c for _, c in walls[mode])
        runs = ", ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {mode} | {med:.2f} | {min(values):.2f} | {runs} | "
                     f"{med / base:.3f} | {med / limit:.3f} | {cpu:.2f} | "
                     f"{cpu / base_cpu:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Overhead of profiling and checkpointing.")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args()
    walls = measure(args.rows, args.repeats)
    text = report(walls, args.rows, args.repeats)
    print(text)
    if args.write:
        # Keep the kill-test section (measured by the test suite) below the new table.
        old = RESULTS.read_text() if RESULTS.exists() else ""
        kept = old[old.find(KILL_SECTION):] if KILL_SECTION in old else ""
        RESULTS.write_text(text + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    main()
