"""Response cache: the fan-out workload (4 fast + 1 smart per row) run three times.

Usage: .venv/bin/python bench/bench_cache.py [--rows 1000] [--latency 0.05] [--no-write]

1. cold, with ``cache=DIR``: every call is sent and stored;
2. rerun unchanged: every call is a hit (target: 0 requests, <= 0.5 s, >= 10,000 calls/s);
3. rerun with only the ``smart`` system prompt edited: only the smart calls are sent
   (target: exactly ``rows`` requests).

The loopback server runs in a child process; requests are counted by the server. Each run is
a fresh pipeline object (so nothing is reused in memory), in this process, with the cache
directory on local disk (warm in the page cache after the first run, as on a rerun).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from common import (
    FAST_MODEL,
    SMART_MODEL,
    fanout_prompt,
    header_lines,
    server_settings,
    table,
    write_section,
)

from plait import LLMInference, Module, run
from plait.testing import LLMServer


class FanOut(Module):
    """bench/common.py's fan-out, with the smart system prompt as a parameter."""

    def __init__(self, smart_prompt: str = "Aggregate.") -> None:
        super().__init__()
        self.a = LLMInference(alias="fast", system_prompt="Angle A.", max_tokens=16)
        self.b = LLMInference(alias="fast", system_prompt="Angle B.", max_tokens=16)
        self.c = LLMInference(alias="fast", system_prompt="Angle C.", max_tokens=16)
        self.d = LLMInference(alias="fast", system_prompt="Angle D.", max_tokens=16)
        self.agg = LLMInference(alias="smart", system_prompt=smart_prompt, max_tokens=16)

    def forward(self, text: str) -> str:
        a, b, c, d = self.a(text), self.b(text), self.c(text), self.d(text)
        return self.agg(f"1: {a}\n2: {b}\n3: {c}\n4: {d}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = [fanout_prompt(i) for i in range(args.rows)]
    cache = Path(tempfile.mkdtemp(prefix="plait-bench-cache-"))
    results: list[tuple[str, int, float, float, int, int]] = []
    try:
        with LLMServer.spawn(**server_settings(args.latency)) as server:
            resources = server.resource_config({"fast": FAST_MODEL, "smart": SMART_MODEL},
                                               max_concurrent=32)
            for label, prompt in (("cold (cache empty)", "Aggregate."),
                                  ("rerun, unchanged", "Aggregate."),
                                  ("rerun, smart prompt edited", "Aggregate, briefly.")):
                before = server.stats().total_requests
                pipeline = FanOut(prompt)
                started, cpu = time.perf_counter(), time.process_time()
                asyncio.run(run(pipeline, rows, resources=resources, cache=cache))
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                report = pipeline.last_run.cache or {}
                results.append((label, server.stats().total_requests - before, wall, cpu,
                                int(report.get("hits", 0)), int(report.get("misses", 0))))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    calls = 5 * args.rows
    body_rows = [(label, f"{sent:,}", f"{wall:.3f}", f"{cpu:.3f}", f"{hits:,}", f"{misses:,}",
                  f"{hits / wall:,.0f}" if hits else "-")
                 for label, sent, wall, cpu, hits, misses in results]
    _, unchanged_sent, unchanged_wall, unchanged_cpu, unchanged_hits, _ = results[1]
    _, edited_sent, _, _, _, _ = results[2]
    verdicts = [
        f"- rerun unchanged: {unchanged_sent} requests (target 0), {unchanged_wall:.3f} s "
        f"(target <= 0.5 s), {unchanged_hits / unchanged_wall:,.0f} cached calls/s (target "
        f">= 10,000); driver CPU {unchanged_cpu:.3f} s = {unchanged_hits / unchanged_cpu:,.0f} "
        "cached calls per CPU-second (what a quiet machine's wall time tends to)",
        f"- smart prompt edited: {edited_sent:,} requests (target exactly {args.rows:,})",
    ]
    body = "\n".join([
        *header_lines([f"- workload: {args.rows:,} rows x 5 calls = {calls:,} calls, server "
                       f"latency {args.latency * 1000:.0f} ms, cache on local disk"]),
        "",
        table(["run", "requests sent", "wall s", "driver CPU s", "cache hits", "misses",
               "hits/s (wall)"],
              body_rows),
        "",
        *verdicts,
    ])
    print(body)
    if not args.no_write:
        write_section("cache", body)


if __name__ == "__main__":
    main()
