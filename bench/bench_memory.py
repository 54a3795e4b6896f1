"""Memory: peak RSS of the driver on the fan-out workload, each size in a fresh process.

Usage: .venv/bin/python bench/bench_memory.py [--sizes 10000,100000] [--no-write]

* 1,000 rows at 50 ms latency, list input (``await pipeline(list)``): target < 250 MB.
* 10,000 and 100,000 rows at 0 ms latency, streamed: a generator input and
  ``async for result in pipeline(gen)`` with results discarded; target: flat within 10%.
* The same sizes with a list input and ``await``: O(N) by definition (the inputs and the
  outputs are all held), reported for honesty.

Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of the child that ran the rows (the
loopback server is another process and is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from typing import Any

from bench_fanout import resources
from common import (
    FanOut,
    fanout_prompt,
    fmt_s,
    header_lines,
    measure,
    peak_rss_mb,
    run_child,
    server_settings,
    table,
    write_section,
)

from plait.testing import LLMServer


async def _stream(url: str, rows: int) -> int:
    pipeline = FanOut().bind(resources=resources(url), progress=False)
    failed = 0
    async for result in pipeline(fanout_prompt(i) for i in range(rows)):
        failed += not result.ok
    return failed


async def _listed(url: str, rows: int) -> int:
    pipeline = FanOut().bind(resources=resources(url), progress=False, streaming=True)
    results = await pipeline([fanout_prompt(i) for i in range(rows)])
    return sum(1 for r in results if not r.ok)


def child(mode: str, url: str, rows: int) -> None:
    """Run ``rows`` rows in ``mode`` ("stream" or "list"); print one JSON line."""
    gc.collect()
    baseline = peak_rss_mb()  # interpreter + imports, before any row
    with measure() as t:
        failed = asyncio.run((_stream if mode == "stream" else _listed)(url, rows))
    print(json.dumps({"wall": t.wall, "cpu": t.cpu, "failed": failed, "rss": peak_rss_mb(),
                      "rss_at_start": baseline}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--child")
    parser.add_argument("--url", default="")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--no-list", action="store_true", help="skip the list-input sizes")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.rows)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: list[tuple[str, str, int, dict[str, Any]]] = []
    with LLMServer.spawn(**server_settings(0.05)) as server:
        r = run_child(__file__, "list", server.openai_base_url, 1000)
        runs.append(("list, await", "50 ms", 1000, r))
        print(f"list 1000 @50ms: {r['rss']:.0f} MB", flush=True)
    with LLMServer.spawn(**server_settings(0.0)) as server:
        for mode in ("stream", "list"):
            if mode == "list" and args.no_list:
                continue
            for rows in sizes:
                r = run_child(__file__, mode, server.openai_base_url, rows)
                label = "generator, async for" if mode == "stream" else "list, await"
                runs.append((label, "0 ms", rows, r))
                print(f"{mode} {rows} @0ms: {r['rss']:.0f} MB in {r['wall']:.1f}s", flush=True)
    body = report(runs, sizes)
    print()
    print(body)
    if not args.no_write:
        write_section("memory", body)


def report(runs: list[tuple[str, str, int, dict[str, Any]]], sizes: list[int]) -> str:
    rows = [[label, latency, f"{n:,}", f"{r['rss']:.1f}", f"{r['rss'] - r['rss_at_start']:.1f}",
             fmt_s(r["wall"]), f"{n * 5 / r['wall']:,.0f}", r["failed"]]
            for label, latency, n, r in runs]
    lines = header_lines([
        "- workload: fan-out (4 `fast` + 1 `smart` per row), `fast` max_concurrent=32, "
        "`smart`=8, default max_inflight (160 rows); each size in a fresh process",
        "- peak RSS = `ru_maxrss` of the driver process; 'growth' subtracts its RSS after "
        "imports, before the first row",
        "",
    ])
    lines.append(table(["input", "latency", "rows", "peak RSS MB", "growth MB", "wall s",
                        "calls/s", "failed rows"], rows))
    lines.append("")
    small = next((r for label, lat, n, r in runs if label == "list, await" and n == 1000), None)
    if small is not None:
        ok = small["rss"] < 250
        lines.append(f"- 1,000 rows (list, 50 ms): {small['rss']:.0f} MB -> "
                     f"{'MET' if ok else 'MISSED'} (< 250 MB)")
    streamed = {n: r for label, _, n, r in runs if label.startswith("generator")}
    if len(streamed) >= 2:
        lo, hi = streamed[min(streamed)], streamed[max(streamed)]
        growth = hi["rss"] / lo["rss"] - 1
        lines.append(f"- streamed {min(streamed):,} -> {max(streamed):,} rows: peak RSS "
                     f"{lo['rss']:.1f} -> {hi['rss']:.1f} MB ({growth:+.1%}) -> "
                     f"{'MET' if abs(growth) <= 0.10 else 'MISSED'} (flat within 10%)")
    listed = {n: r for label, lat, n, r in runs if label == "list, await" and lat == "0 ms"}
    if len(listed) >= 2:
        lo, hi = listed[min(listed)], listed[max(listed)]
        per_row = (hi["rss"] - lo["rss"]) * 1024 / (max(listed) - min(listed))
        lines.append(f"- list input (O(N) by definition): {lo['rss']:.0f} -> {hi['rss']:.0f} MB, "
                     f"about {per_row:.1f} KB per row held (inputs, BatchResults, outputs)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
