"""Rate-limited: extract-and-compare (2 ``fast`` + 1 ``smart`` per row) under four 429 styles.

Usage: .venv/bin/python bench/bench_ratelimited.py [--rows 200] [--rate 100] [--burst 10]
       [--styles ms,seconds,none,concurrency] [--cap 20] [--cap-latency 0.2] [--repeat 1]

The loopback server (child process, 50 ms latency) refuses ``fast`` requests with 429 in one
of four styles, each a separate run against a freshly reset server:

* ``ms``: beyond ``--rate`` req/s (token bucket of ``--burst``), with ``retry-after-ms`` and
  a whole-second ``retry-after`` (OpenAI's headers);
* ``seconds``: the same cap, with only a whole-second ``retry-after`` (Anthropic's style);
* ``none``: the same cap, with no hint at all;
* ``concurrency``: no rate cap, but a 429 (whole-second ``retry-after`` only) above
  ``--cap`` ``fast`` requests in flight; ``fast`` replies take ``--cap-latency`` (200 ms:
  loopback HTTP adds ~5 ms per request on this box, which would be 10% of 50 ms).

Rate-bound limit: 2N / rate seconds for the rate caps, 2N x cap-latency / cap for the
concurrency cap (with the defaults both are 4 s). Target: plait, with no limit configured,
finishes every row in <= 1.15 x that. Variants, each in a fresh process:

* plait, adaptive: the endpoint has no ``rate_limit``; plait learns the server's limit;
* plait, configured: ``rate_limit=rate * 60`` per minute (``max_concurrent=cap`` for the
  concurrency cap), as a user who knows the limit;
* ``baselines/asyncio_ratelimited.py``: hand-written asyncio, 3 tries per call on 429.

429s per accepted request = the server's 429s / the ``fast`` requests it accepted.
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
    "plait-adaptive": "plait, no limit configured (learns it from the 429s)",
    "plait-configured": "plait, limit configured at the server's",
    "asyncio-naive": "asyncio + semaphores + aiohttp, 3 tries on 429",
}
STYLES = {
    "ms": "rate cap, `retry-after-ms` + whole-second `retry-after` (OpenAI)",
    "seconds": "rate cap, whole-second `retry-after` only (Anthropic)",
    "none": "rate cap, no hint",
    "concurrency": "concurrency cap, whole-second `retry-after` only",
}


def docs(rows: int) -> list[tuple[str, str]]:
    """The row inputs: two short documents each."""
    return [(f"doc {i}a: revenue grew 12%", f"doc {i}b: revenue fell 3%") for i in range(rows)]


async def _run_plait(url: str, rows: int, rate: float | None, cap: int | None
                     ) -> dict[str, Any]:
    per_min = rate * 60 if rate else None
    config = ResourceConfig(endpoints={
        "fast": EndpointConfig("openai", FAST_MODEL, base_url=url, api_key=KEY,
                               max_concurrent=cap or FAST_LIMIT, rate_limit=per_min),
        "smart": EndpointConfig("openai", SMART_MODEL, base_url=url, api_key=KEY,
                                max_concurrent=SMART_LIMIT),
    })
    pipeline = ExtractAndCompare().bind(resources=config, progress=False, streaming=True)
    results = await pipeline(docs(rows))
    fast = pipeline.last_run.endpoints["fast"]
    errors = sorted({str(r.error)[:200] for r in results if not r.ok})[:3]
    return {"failed": sum(1 for r in results if not r.ok), "retries": fast["retries"],
            "errors": errors}


async def _run_naive(url: str, rows: int) -> dict[str, Any]:
    from baselines.asyncio_ratelimited import run

    failed, _ = await run(url, KEY, docs(rows), FAST_MODEL, SMART_MODEL, FAST_LIMIT,
                          SMART_LIMIT)
    return {"failed": failed, "retries": None, "errors": []}


def child(variant: str, style: str, url: str, rows: int, rate: float, cap: int) -> None:
    """Run one variant; print one JSON line."""
    configured = variant == "plait-configured"
    with measure() as t:
        if variant == "asyncio-naive":
            out = asyncio.run(_run_naive(url, rows))
        elif style == "concurrency":
            out = asyncio.run(_run_plait(url, rows, None, cap if configured else None))
        else:
            out = asyncio.run(_run_plait(url, rows, rate if configured else None, None))
    print(json.dumps(out | {"wall": t.wall, "cpu": t.cpu}))


def style_settings(style: str, args: argparse.Namespace) -> dict[str, Any]:
    """The server settings of one 429 style (every limit named, so each resets the others)."""
    if style == "concurrency":
        return {"rate_limit": None, "max_concurrency": {FAST_MODEL: args.cap},
                "retry_hint": "seconds",
                "latency": {FAST_MODEL: args.cap_latency, "*": args.latency}}
    hint = {"ms": "both", "seconds": "seconds", "none": "none"}[style]
    return {"rate_limit": {FAST_MODEL: args.rate}, "rate_burst": args.burst,
            "max_concurrency": None, "retry_hint": hint, "latency": args.latency}


def one_run(server: Any, variant: str, style: str, args: argparse.Namespace
            ) -> dict[str, Any]:
    """One variant in a fresh process against a freshly reset server; its figures."""
    server.configure(**style_settings(style, args))  # a full, fresh bucket
    server.reset_stats()
    cmd = [sys.executable, __file__, "--child", variant, "--style", style,
           "--url", server.openai_base_url, "--rows", str(args.rows),
           "--rate", str(args.rate), "--cap", str(args.cap)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    stats = server.stats()
    fast = stats.requests_by_model.get(FAST_MODEL, 0)
    result["429"] = stats.rate_limited
    result["requests"] = stats.total_requests
    result["per_accepted"] = stats.rate_limited / max(1, fast - stats.rate_limited)
    result["max_in_flight"] = stats.max_in_flight_by_model.get(FAST_MODEL, 0)
    return result


def limit_of(style: str, args: argparse.Namespace) -> float:
    """The rate-bound limit of one style, seconds."""
    if style == "concurrency":
        return 2 * args.rows * args.cap_latency / args.cap
    return 2 * args.rows / args.rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--cap-latency", type=float, default=0.2)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per variant; the table shows the median (by wall time)")
    parser.add_argument("--child")
    parser.add_argument("--style", default="ms")
    parser.add_argument("--url", default="")
    parser.add_argument("--only")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.style, args.url, args.rows, args.rate, args.cap)
        return
    only = set(args.only.split(",")) if args.only else None
    styles = [s for s in args.styles.split(",") if s]
    measured: dict[tuple[str, str], dict[str, Any]] = {}
    with LLMServer.spawn(**server_settings(args.latency)) as server:
        for style in styles:
            for variant in VARIANTS:
                if only and variant not in only:
                    continue
                runs = [one_run(server, variant, style, args) for _ in range(args.repeat)]
                result = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]  # the median
                result["walls"] = [r["wall"] for r in runs]
                measured[style, variant] = result
                ratio = result["wall"] / limit_of(style, args)
                print(f"{style:11} {variant:17} wall {result['wall']:.3f}s ({ratio:.3f}x) "
                      f"failed {result['failed']} 429s {result['429']} "
                      f"({result['per_accepted']:.3f}/accepted) {result['errors'][:1]}",
                      flush=True)
    body = report(measured, args, styles)
    print()
    print(body)
    if not args.no_write:
        write_section("ratelimited", body)


def report(m: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace,
           styles: list[str]) -> str:
    """Header, table and verdicts."""
    rows: list[list[Any]] = []
    for style in styles:
        limit = limit_of(style, args)
        for variant, label in VARIANTS.items():
            r = m.get((style, variant))
            if r is None:
                continue
            walls = ", ".join(fmt_ratio(w / limit) for w in r["walls"])
            rows.append([STYLES[style], label, fmt_s(r["wall"]), fmt_ratio(r["wall"] / limit),
                         walls,
                         r["failed"], r["requests"], r["429"], f"{r['per_accepted']:.3f}",
                         r["max_in_flight"], fmt_s(r["cpu"])])
    lines = header_lines([
        f"- workload: {args.rows} rows x (2 `fast` extractions + 1 `smart` comparison); "
        f"server latency {args.latency * 1000:.0f} ms; `fast` max_concurrent={FAST_LIMIT} "
        f"(unless configured), `smart`={SMART_LIMIT}",
        f"- rate caps: `fast` at {args.rate:g} req/s (token bucket, burst {args.burst:g}); "
        f"rate-bound limit = {2 * args.rows} fast calls / {args.rate:g} per s = "
        f"{2 * args.rows / args.rate:.2f} s",
        f"- concurrency cap: 429 above {args.cap} `fast` requests in flight, `fast` latency "
        f"{args.cap_latency * 1000:.0f} ms; rate-bound limit = {2 * args.rows} x "
        f"{args.cap_latency:g} s / {args.cap} = "
        f"{2 * args.rows * args.cap_latency / args.cap:.2f} s",
        "- target: plait (adaptive) <= 1.15 x the limit with 0 failed rows, in every style; "
        "429s per accepted request = server 429s / `fast` requests accepted",
        f"- each variant ran {args.repeat} time(s), each in a fresh process; the row is the "
        "median run, 'every run' lists all",
        "",
    ])
    lines.append(table(["429 style", "variant", "wall s", "wall / limit", "every run",
                        "failed rows",
                        "requests", "429s", "429s per accepted", "max in flight (fast)",
                        "driver CPU s"], rows))
    lines.append("")
    for style in styles:
        for variant in ("plait-adaptive", "plait-configured"):
            r = m.get((style, variant))
            if r is not None:
                ratio = r["wall"] / limit_of(style, args)
                ok = r["failed"] == 0 and ratio <= 1.15
                lines.append(f"- {style}, {variant}: {fmt_ratio(ratio)}, {r['failed']} failed "
                             f"rows, {r['per_accepted']:.3f} 429s per accepted request -> "
                             f"{'MET' if ok else 'MISSED'}")
        naive = m.get((style, "asyncio-naive"))
        if naive is not None:
            lines.append(f"- {style}: the hand-written baseline lost {naive['failed']} of "
                         f"{args.rows} rows")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
