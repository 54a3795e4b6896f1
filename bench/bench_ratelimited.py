"""Rate-limited: extract-and-compare (2 ``fast`` + 1 ``smart`` per row) under a server cap.

Usage: .venv/bin/python bench/bench_ratelimited.py [--rows 200] [--rate 100] [--burst 10]

The loopback server (child process, 50 ms latency) answers ``fast`` requests beyond
``--rate`` per second with 429 + retry-after (token bucket of ``--burst`` requests, so the
rate bound is real from the first second). Rate-bound limit = 2N / rate seconds; target:
plait finishes every row in <= 1.15 x that. Variants, each in a fresh process:

* plait, adaptive: the endpoint has no ``rate_limit``; plait learns it from the 429s;
* plait, configured: ``rate_limit=rate * 60`` per minute, as a user who knows the limit;
* ``baselines/asyncio_ratelimited.py``: hand-written asyncio, 3 tries per call on 429.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from typing import Any

from common import (
    FAST_MODEL,
    SMART_MODEL,
    ExtractAndCompare,
    fmt_ratio,
    fmt_s,
    header_lines,
    measure,
    server_settings,
    table,
    write_section,
)

from plait.resources.config import EndpointConfig, ResourceConfig
from plait.testing import LLMServer

KEY = "plait-testing-key"
FAST_LIMIT = 32
SMART_LIMIT = 8
VARIANTS = {
    "plait-adaptive": "plait, no rate_limit configured (adaptive on 429)",
    "plait-configured": "plait, rate_limit configured at the server's rate",
    "asyncio-naive": "asyncio + semaphores + aiohttp, 3 tries on 429",
}


def docs(rows: int) -> list[tuple[str, str]]:
    """The row inputs: two short documents each."""
    return [(f"doc {i}a: revenue grew 12%", f"doc {i}b: revenue fell 3%") for i in range(rows)]


async def _run_plait(url: str, rows: int, rate: float | None) -> dict[str, Any]:
    per_min = rate * 60 if rate else None
    config = ResourceConfig(endpoints={
        "fast": EndpointConfig("openai", FAST_MODEL, base_url=url, api_key=KEY,
                               max_concurrent=FAST_LIMIT, rate_limit=per_min),
        "smart": EndpointConfig("openai", SMART_MODEL, base_url=url, api_key=KEY,
                                max_concurrent=SMART_LIMIT),
    })
    pipeline = ExtractAndCompare().bind(resources=config, progress=False, streaming=True)
    results = await pipeline(docs(rows))
    fast = pipeline.last_run.endpoints["fast"]
    return {"failed": sum(1 for r in results if not r.ok), "retries": fast["retries"]}


async def _run_naive(url: str, rows: int) -> dict[str, Any]:
    from baselines.asyncio_ratelimited import run

    failed, _ = await run(url, KEY, docs(rows), FAST_MODEL, SMART_MODEL, FAST_LIMIT,
                          SMART_LIMIT)
    return {"failed": failed, "retries": None}


def child(variant: str, url: str, rows: int, rate: float) -> None:
    """Run one variant; print one JSON line."""
    with measure() as t:
        if variant == "asyncio-naive":
            out = asyncio.run(_run_naive(url, rows))
        else:
            out = asyncio.run(_run_plait(url, rows, rate if variant == "plait-configured"
                                         else None))
    print(json.dumps(out | {"wall": t.wall, "cpu": t.cpu}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--child")
    parser.add_argument("--url", default="")
    parser.add_argument("--only")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.rows, args.rate)
        return
    limit = 2 * args.rows / args.rate
    only = set(args.only.split(",")) if args.only else None
    measured: dict[str, dict[str, Any]] = {}
    settings = server_settings(args.latency, rate_limit={FAST_MODEL: args.rate},
                               rate_burst=args.burst)
    with LLMServer.spawn(**settings) as server:
        for variant in VARIANTS:
            if only and variant not in only:
                continue
            server.reset_stats()
            cmd = [sys.executable, __file__, "--child", variant, "--url",
                   server.openai_base_url, "--rows", str(args.rows), "--rate", str(args.rate)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            stats = server.stats()
            result["429"] = stats.rate_limited
            result["requests"] = stats.total_requests
            measured[variant] = result
            print(f"{variant:17} wall {result['wall']:.3f}s failed {result['failed']} "
                  f"429s {result['429']}", flush=True)
            # Let the server's bucket refill before the next variant.
            asyncio.run(asyncio.sleep(2 * args.burst / args.rate + 0.5))
    body = report(measured, args, limit)
    print()
    print(body)
    if not args.no_write:
        write_section("ratelimited", body)


def report(m: dict[str, dict[str, Any]], args: argparse.Namespace, limit: float) -> str:
    """Header, table and verdicts."""
    rows: list[list[Any]] = []
    for variant, label in VARIANTS.items():
        r = m.get(variant)
        if r is None:
            continue
        rows.append([label, fmt_s(r["wall"]), fmt_ratio(r["wall"] / limit), r["failed"],
                     r["requests"], r["429"], "-" if r["retries"] is None else r["retries"],
                     fmt_s(r["cpu"])])
    lines = header_lines([
        f"- workload: {args.rows} rows x (2 `fast` extractions + 1 `smart` comparison); "
        f"server latency {args.latency * 1000:.0f} ms; server caps `fast` at {args.rate:g} "
        f"req/s (token bucket, burst {args.burst:g}), 429 + retry-after beyond it; "
        f"`fast` max_concurrent={FAST_LIMIT}, `smart`={SMART_LIMIT}",
        f"- rate-bound limit = {2 * args.rows} fast calls / {args.rate:g} per s = "
        f"{limit:.2f} s; target: plait <= 1.15 x with 0 failed rows",
        "- LangGraph and Pydantic AI are not installed in this venv and were not installed "
        "for this bench; the hand-written baseline stands for typical user code",
        "",
    ])
    lines.append(table(["variant", "wall s", "wall / limit", "failed rows", "requests",
                        "429s", "plait retries (fast)", "driver CPU s"], rows))
    lines.append("")
    for variant in ("plait-adaptive", "plait-configured"):
        r = m.get(variant)
        if r is not None:
            ok = r["failed"] == 0 and r["wall"] / limit <= 1.15
            lines.append(f"- {variant}: {fmt_ratio(r['wall'] / limit)}, {r['failed']} failed "
                         f"rows -> {'MET' if ok else 'MISSED'}")
    naive = m.get("asyncio-naive")
    if naive is not None:
        lines.append(f"- hand-written baseline lost {naive['failed']} of {args.rows} rows")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
