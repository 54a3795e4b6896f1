"""Fan-out: per row 4 independent ``fast`` calls + 1 ``smart`` call built from their answers.

Usage: .venv/bin/python bench/bench_fanout.py [--rows 1000] [--latency 0.05] [--no-write]

The loopback server runs in a child process (its own core); every variant runs in a fresh
child process of its own, so its driver CPU (user + sys, ``getrusage``) and peak RSS are its
own. Variants, in the same run:

* plait (default transport, aiohttp) and plait with ``transport="sdk"``;
* ``baselines/asyncio_sdk.py``: hand-written asyncio + semaphores + ``openai.AsyncOpenAI``;
* ``baselines/asyncio_aiohttp.py``: the same code posting JSON with aiohttp;
* plait and the hand-written loop against an in-process fake client that answers at once
  (no HTTP, no server): driver CPU / calls is plait's own CPU per LLM node.

Physical limit = max(2 x latency, 4N x latency / 32, N x latency / 8); target <= 1.05 x.
The server's max in-flight per model is checked against the configured limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from common import (
    FAST_MODEL,
    SMART_MODEL,
    FanOut,
    fanout_prompt,
    fmt_ratio,
    fmt_s,
    header_lines,
    measure,
    peak_rss_mb,
    run_child,
    server_settings,
    table,
    write_section,
)

from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.resources.config import EndpointConfig, ResourceConfig
from plait.testing import LLMServer

FAST_LIMIT = 32
SMART_LIMIT = 8
KEY = "plait-testing-key"
CALLS_PER_ROW = 5

VARIANTS = {
    "plait": "plait (aiohttp transport, default)",
    "plait-sdk": "plait (transport=\"sdk\")",
    "asyncio-sdk": "asyncio + semaphores + openai.AsyncOpenAI",
    "asyncio-aiohttp": "asyncio + semaphores + aiohttp JSON",
}
FAKE_VARIANTS = {
    "plait-fake": "plait, in-process fake client (no HTTP)",
    "asyncio-fake": "asyncio + semaphores, same fake client",
}


def resources(url: str, transport: str = "aiohttp") -> ResourceConfig:
    """``fast`` (32 in flight) and ``smart`` (8 in flight) on the loopback server."""
    def endpoint(model: str, limit: int) -> EndpointConfig:
        return EndpointConfig("openai", model, base_url=url, api_key=KEY,
                              max_concurrent=limit, transport=transport)  # type: ignore[arg-type]
    return ResourceConfig(endpoints={"fast": endpoint(FAST_MODEL, FAST_LIMIT),
                                     "smart": endpoint(SMART_MODEL, SMART_LIMIT)})


class FakeClient:
    """An ``LLMClient`` that answers at once, in process: isolates plait's own CPU."""

    def __init__(self, config: EndpointConfig, alias: str) -> None:
        self._reply = LLMResponse(text=f"ok from {config.model}", usage=Usage(20, 4),
                                  model=config.model, finish_reason="stop")

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        return self._reply

    async def aclose(self) -> None:
        return None


# --- child: one variant ------------------------------------------------------------------------

Latency = dict[str, float]  # alias -> mean seconds per request, as the driver saw it


async def _run_plait(url: str, rows: int, transport: str) -> tuple[int, Latency]:
    pipeline = FanOut().bind(resources=resources(url, transport), progress=False,
                             streaming=True)
    results = await pipeline([fanout_prompt(i) for i in range(rows)])
    endpoints = pipeline.last_run.endpoints
    seen = {alias: endpoints[alias]["latency_mean"] or 0.0 for alias in ("fast", "smart")}
    return sum(1 for r in results if not r.ok), seen


async def _run_baseline(url: str, rows: int, kind: str) -> tuple[int, Latency]:
    prompts = [fanout_prompt(i) for i in range(rows)]
    if kind == "asyncio-sdk":
        from baselines import asyncio_sdk as baseline
    else:
        from baselines import asyncio_aiohttp as baseline  # type: ignore[no-redef]
    sums: dict[str, list[float]] = {}
    out = await baseline.run(url, KEY, prompts, FAST_MODEL, SMART_MODEL, FAST_LIMIT,
                             SMART_LIMIT, sums)
    seen = {alias: sums[model][0] / sums[model][1]
            for alias, model in (("fast", FAST_MODEL), ("smart", SMART_MODEL))}
    return rows - len(out), seen


async def _run_fake_baseline(rows: int) -> int:
    from baselines.asyncio_sdk import fanout_rows

    client = FakeClient(EndpointConfig("openai", "fake", base_url="http://x"), "fake")

    async def call(model: str, system: str, prompt: str) -> str:
        reply = await client.complete(LLMRequest(prompt, system), timeout=60)
        return reply.text

    out = await fanout_rows(call, [fanout_prompt(i) for i in range(rows)], FAST_MODEL,
                            SMART_MODEL, FAST_LIMIT, SMART_LIMIT)
    return rows - len(out)


def child(variant: str, url: str, rows: int) -> None:
    """Run one variant and print one JSON line: wall, cpu, failed rows, peak RSS."""
    if variant == "plait-fake":
        import plait.resources.manager as manager_module

        manager_module.make_client = FakeClient  # type: ignore[assignment]
    seen: Latency = {}
    with measure() as t:
        if variant in ("plait", "plait-fake"):
            failed, seen = asyncio.run(_run_plait(url, rows, "aiohttp"))
        elif variant == "plait-sdk":
            failed, seen = asyncio.run(_run_plait(url, rows, "sdk"))
        elif variant == "asyncio-fake":
            failed = asyncio.run(_run_fake_baseline(rows))
        else:
            failed, seen = asyncio.run(_run_baseline(url, rows, variant))
    print(json.dumps({"wall": t.wall, "cpu": t.cpu, "failed": failed, "rss": peak_rss_mb(),
                      "latency": seen}))


# --- parent --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--child")
    parser.add_argument("--url", default="http://unused/v1")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--only", help="comma-separated variants")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.rows)
        return
    rows, latency = args.rows, args.latency
    calls = rows * CALLS_PER_ROW
    limit = max(2 * latency, 4 * rows * latency / FAST_LIMIT, rows * latency / SMART_LIMIT)
    only = set(args.only.split(",")) if args.only else None
    measured: dict[str, dict[str, Any]] = {}
    with LLMServer.spawn(**server_settings(latency)) as server:
        for variant in VARIANTS:
            if only and variant not in only:
                continue
            server.reset_stats()
            result = run_child(__file__, variant, server.openai_base_url, rows)
            stats = server.stats()
            result["max_fast"] = stats.max_in_flight_by_model.get(FAST_MODEL, 0)
            result["max_smart"] = stats.max_in_flight_by_model.get(SMART_MODEL, 0)
            result["requests"] = stats.total_requests
            result["429"] = stats.rate_limited
            measured[variant] = result
            print(f"{variant:16} wall {result['wall']:.3f}s  cpu {result['cpu']:.3f}s  "
                  f"max in flight fast/smart {result['max_fast']}/{result['max_smart']}",
                  flush=True)
    for variant in FAKE_VARIANTS:
        if only and variant not in only:
            continue
        measured[variant] = run_child(__file__, variant, "http://unused/v1", rows)
        print(f"{variant:16} wall {measured[variant]['wall']:.3f}s  "
              f"cpu {measured[variant]['cpu']:.3f}s", flush=True)
    body = report(measured, rows, latency, limit, calls)
    print()
    print(body)
    if not args.no_write:
        write_section("fanout", body)


def limit_for(rows: int, fast: float, smart: float) -> float:
    """The physical limit for per-request latencies ``fast`` and ``smart``."""
    return max(fast + smart, 4 * rows * fast / FAST_LIMIT, rows * smart / SMART_LIMIT)


def report(m: dict[str, dict[str, Any]], rows: int, latency: float, limit: float,
           calls: int) -> str:
    """The section text: header, the HTTP table, the fake-client table, verdicts."""
    http_rows: list[list[Any]] = []
    for variant, label in VARIANTS.items():
        r = m.get(variant)
        if r is None:
            continue
        within = r["max_fast"] <= FAST_LIMIT and r["max_smart"] <= SMART_LIMIT
        seen = r["latency"]
        observed = limit_for(rows, seen["fast"], seen["smart"])
        http_rows.append([
            label, fmt_s(r["wall"]), fmt_ratio(r["wall"] / limit),
            f"{seen['fast'] * 1000:.1f}/{seen['smart'] * 1000:.1f}",
            fmt_ratio(r["wall"] / observed), fmt_s(r["cpu"]),
            f"{r['cpu'] / calls * 1e6:.0f}", f"{r['max_fast']}/{r['max_smart']}"
            + ("" if within else " OVER"), r["requests"], r["429"], r["failed"],
            f"{r['rss']:.0f}",
        ])
    lines = header_lines([
        f"- workload: {rows} rows x (4 `fast` + 1 `smart`) = {calls} calls; server latency "
        f"{latency * 1000:.0f} ms; `fast` max_concurrent={FAST_LIMIT}, `smart`={SMART_LIMIT}",
        f"- physical limit = max(2 x {latency:g}, {4 * rows} x {latency:g} / {FAST_LIMIT}, "
        f"{rows} x {latency:g} / {SMART_LIMIT}) = {limit:.3f} s; target: plait <= 1.05 x",
        "- driver CPU = user + sys of the variant's own process (`getrusage`); the server "
        "runs in another process",
        "- observed latency = mean request time as the driver saw it (server latency + HTTP + "
        "CPU contention); wall / observed limit is the limit recomputed with it: how well the "
        "calls were scheduled, separated from how slow a loaded box made each request",
        "",
    ])
    lines.append(table(
        ["variant", "wall s", "wall / limit", "observed latency ms fast/smart",
         "wall / observed limit", "driver CPU s", "CPU us/call",
         "server max in flight fast/smart", "requests", "429s", "failed rows",
         "peak RSS MB"], http_rows))
    fake_rows: list[list[Any]] = []
    for variant, label in FAKE_VARIANTS.items():
        r = m.get(variant)
        if r is not None:
            fake_rows.append([label, fmt_s(r["wall"]), fmt_s(r["cpu"]),
                              f"{r['cpu'] / calls * 1e6:.1f}", f"{r['rss']:.0f}"])
    if fake_rows:
        lines += ["", "plait's own CPU per LLM node (no HTTP, no server; includes interpreter, "
                  "executor, pool, limiter, stats, prompt formatting; target < 100 us):", ""]
        lines.append(table(["variant", "wall s", "driver CPU s", "CPU us/call", "peak RSS MB"],
                           fake_rows))
    lines += ["", *verdicts(m, limit, calls)]
    return "\n".join(lines)


def verdicts(m: dict[str, dict[str, Any]], limit: float, calls: int) -> list[str]:
    """One line per target: met or missed, with the figure."""
    out: list[str] = []
    plait = m.get("plait")
    if plait is not None:
        ratio = plait["wall"] / limit
        out.append(f"- wall time target (<= 1.05 x limit): {fmt_ratio(ratio)} -> "
                   f"{'MET' if ratio <= 1.05 else 'MISSED'}")
        for other in ("asyncio-sdk", "asyncio-aiohttp"):
            if other in m:
                out.append(f"- plait / {other}: wall {plait['wall'] / m[other]['wall']:.3f}x, "
                           f"driver CPU {plait['cpu'] / m[other]['cpu']:.3f}x")
        within = plait["max_fast"] <= FAST_LIMIT and plait["max_smart"] <= SMART_LIMIT
        out.append(f"- server never saw more in flight than configured: "
                   f"{'YES' if within else 'NO'} ({plait['max_fast']}/{plait['max_smart']} "
                   f"vs {FAST_LIMIT}/{SMART_LIMIT})")
    fake = m.get("plait-fake")
    if fake is not None:
        per_call = fake["cpu"] / calls * 1e6
        line = (f"- plait CPU per LLM node (fake client): {per_call:.1f} us -> "
                f"{'MET' if per_call < 100 else 'MISSED'} (< 100 us)")
        base = m.get("asyncio-fake")
        if base is not None:
            line += (f"; minus the hand-written loop's {base['cpu'] / calls * 1e6:.1f} us = "
                     f"{(fake['cpu'] - base['cpu']) / calls * 1e6:.1f} us added by plait")
        out.append(line)
    return out


if __name__ == "__main__":
    main()
