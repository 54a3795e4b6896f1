"""Headline: one extract-and-compare row (2 extractions + 1 comparison) at 50 ms latency.

Usage: .venv/bin/python bench/bench_headline.py [--warm 20] [--no-write]

The two extractions run in parallel, so the physical limit is 2 latencies (100 ms). A fresh
child process imports plait, then times its first call (cold: tracing, client and connection
set-up included) and ``--warm`` more calls in the same process. Target: warm <= 1.05 x 2
latencies. A hand-written asyncio + aiohttp version is timed the same way for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from common import (
    FAST_MODEL,
    SMART_MODEL,
    ExtractAndCompare,
    fmt_ratio,
    header_lines,
    server_settings,
    table,
    write_section,
)

from plait import ExecutionSettings
from plait.resources.config import EndpointConfig, ResourceConfig
from plait.testing import LLMServer

KEY = "plait-testing-key"
VARIANTS = ("plait", "plait in ExecutionSettings", "asyncio-aiohttp")
DOC_A = "Acme Q3: revenue 12.1M (+12%), churn 2.1%, 140 staff."
DOC_B = "Acme Q4: revenue 11.7M (-3%), churn 2.6%, 151 staff."


async def _plait(url: str, warm: int, shared: bool = False) -> list[float]:
    config = ResourceConfig(endpoints={
        "fast": EndpointConfig("openai", FAST_MODEL, base_url=url, api_key=KEY,
                               max_concurrent=32),
        "smart": EndpointConfig("openai", SMART_MODEL, base_url=url, api_key=KEY,
                                max_concurrent=8),
    })
    if shared:  # one resource manager (clients, connections) for every call of the block
        async with ExecutionSettings(resources=config):
            return await _time_calls(ExtractAndCompare(), warm)
    return await _time_calls(ExtractAndCompare().bind(resources=config), warm)


async def _time_calls(pipeline: ExtractAndCompare, warm: int) -> list[float]:
    times: list[float] = []
    for _ in range(warm + 1):
        start = time.perf_counter()
        await pipeline(DOC_A, DOC_B)
        times.append(time.perf_counter() - start)
    return times


async def _baseline(url: str, warm: int) -> list[float]:
    import aiohttp
    from baselines.asyncio_aiohttp import aiohttp_call

    times: list[float] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        call = aiohttp_call(session, f"{url}/chat/completions")
        for _ in range(warm + 1):
            start = time.perf_counter()
            facts = await asyncio.gather(call(FAST_MODEL, "Extract the key facts.", DOC_A),
                                         call(FAST_MODEL, "Extract the key facts.", DOC_B))
            await call(SMART_MODEL, "Compare the two fact lists.",
                       f"A:\n{facts[0]}\n\nB:\n{facts[1]}")
            times.append(time.perf_counter() - start)
    return times


def child(variant: str, url: str, warm: int) -> None:
    """Time the calls of one variant in this (fresh) process; print one JSON line."""
    if variant == "asyncio-aiohttp":
        times = asyncio.run(_baseline(url, warm))
    else:
        times = asyncio.run(_plait(url, warm, shared=variant == VARIANTS[1]))
    print(json.dumps({"times": times}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--child")
    parser.add_argument("--url", default="")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.warm)
        return
    measured: dict[str, list[float]] = {}
    with LLMServer.spawn(**server_settings(args.latency)) as server:
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--child", variant, "--url",
                   server.openai_base_url, "--warm", str(args.warm)]
            print(f"running {variant}", flush=True)
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            measured[variant] = json.loads(out.strip().splitlines()[-1])["times"]
    body = report(measured, args.latency, args.warm)
    print(body)
    if not args.no_write:
        write_section("headline", body)


def report(m: dict[str, list[float]], latency: float, warm: int) -> str:
    limit = 2 * latency
    rows: list[list[Any]] = []
    for variant, times in m.items():
        cold, rest = times[0], sorted(times[1:])
        second = times[1]
        p90 = rest[min(len(rest) - 1, int(0.9 * len(rest)))]
        rows.append([variant, f"{cold * 1000:.1f}", f"{second * 1000:.1f}",
                     f"{statistics.median(rest) * 1000:.1f}", f"{rest[0] * 1000:.1f}",
                     f"{p90 * 1000:.1f}", fmt_ratio(statistics.median(rest) / limit)])
    lines = header_lines([
        f"- workload: 1 row of extract-and-compare (2 `fast` in parallel, then 1 `smart`); "
        f"server latency {latency * 1000:.0f} ms; limit = 2 latencies = {limit * 1000:.0f} ms",
        f"- cold = the first call in a fresh process (after imports); warm = the next {warm} "
        "calls in the same process",
        "- 'plait' = `pipeline.bind(resources=...)`, awaited once per call (calls on one "
        "event loop reuse its resource manager, so connections stay warm); 'plait in "
        "ExecutionSettings' = the same calls inside `async with ExecutionSettings(resources=...)`"
        ", which shares the block's manager",
        "",
    ])
    lines.append(table(["variant", "cold ms", "2nd call ms", "warm median ms", "warm min ms",
                        "warm p90 ms", "warm median / limit"], rows))
    plait = m.get("plait")
    if plait is not None:
        second = plait[1] / limit
        median = statistics.median(plait[1:]) / limit
        lines += ["", f"- warm target (<= 1.05 x {limit * 1000:.0f} ms), plait: second call "
                  f"{fmt_ratio(second)}, median {fmt_ratio(median)} -> "
                  f"{'MET' if median <= 1.05 else 'MISSED'} (judged on the median)"]
    shared = m.get(VARIANTS[1])
    if shared is not None:
        median = statistics.median(shared[1:]) / limit
        lines.append(f"- same target, {VARIANTS[1]}: median {fmt_ratio(median)} -> "
                     f"{'MET' if median <= 1.05 else 'MISSED'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
