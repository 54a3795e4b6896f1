"""Issue 4: the fan-out workload on a 3-node Ray cluster, side by side with the local executor.

Usage:
    .venv/bin/python bench/bench_ray_fanout.py                      # both parts
    .venv/bin/python bench/bench_ray_fanout.py --part fanout --rows 5000
    .venv/bin/python bench/bench_ray_fanout.py --part rate --rate-rows 1200 [--no-write]

The loopback server runs in a child process. The cluster is a ``ray.cluster_utils.Cluster``
(head + 2 worker nodes, all on this machine) and this process is its driver; the local
executor runs in this process too, before the cluster starts, on the same workload.

* ``fanout``: ``bench/common.FanOut`` (4 ``fast`` + 1 ``smart`` per row), GLOBAL limits
  ``fast`` max_concurrent=128 and ``smart``=32. Physical limit =
  max(2 x latency, 4N x latency / 128, N x latency / 32); target Ray <= 1.15 x, and the
  server never sees more in flight per model than the global limit.
* ``rate``: the same workload against a server capping each model's request rate; plait's
  ``rate_limit`` set 20% below the cap (target: zero 429s) and 50% above it (target: every
  row present, 429s < 5% of requests).

* ``cpu`` (issue 10): the 1,000-row fan-out of ``bench_fanout.py`` (50 ms, caps 32/8) on
  a local Ray (one node, ``num_cpus=2``) beside the local executor, in the same run. CPU is
  that of the whole process tree (driver + Ray's GCS, raylet, workers and limiter actors;
  the loopback server excluded), so Ray's own processes count. Targets: Ray wall <= 1.2 x
  the physical limit, Ray CPU <= 2 x local. Written to ``bench/RESULTS.md`` (section
  ``ray_cpu``).

Figures of ``fanout``/``rate`` go to ``bench/results_ray.md`` (one section per part).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    FAST_MODEL,
    RESULTS,
    SMART_MODEL,
    FanOut,
    fanout_prompt,
    fmt_ratio,
    fmt_s,
    header_lines,
    load_average,
    measure,
    server_settings,
    table,
)

from plait.resources.config import ResourceConfig
from plait.testing import LLMServer

RESULTS_RAY = BENCH_DIR / "results_ray.md"
FAST_LIMIT = 128
SMART_LIMIT = 32
HEALTH = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
          "health_check_failure_threshold": 3}
TARGET = 1.15
RATE_TARGET_429 = 0.05


@dataclass
class Run:
    """One measured pipeline call and what the server saw during it."""

    label: str
    rows: int
    wall: float = 0.0
    cpu: float = 0.0
    failed: int = 0
    missing: int = 0
    requests: int = 0
    rate_limited: int = 0
    max_fast: int = 0
    max_smart: int = 0
    load: str = ""
    latency: dict[str, float] = field(default_factory=dict[str, float])
    utilization: dict[str, float] = field(default_factory=dict[str, float])
    edges: tuple[float, float] = (0.0, 0.0)
    limiter: dict[str, Any] = field(default_factory=dict[str, Any])


def resources(server: Any, rate_fast: float | None = None,
              rate_smart: float | None = None) -> ResourceConfig:
    """``fast`` (128 in flight) and ``smart`` (32) on the server; rates in requests/min."""
    fast = server.resource_config({"fast": FAST_MODEL}, max_concurrent=FAST_LIMIT,
                                  rate_limit=rate_fast, max_retries=10)
    smart = server.resource_config({"smart": SMART_MODEL}, max_concurrent=SMART_LIMIT,
                                   rate_limit=rate_smart, max_retries=10)
    return ResourceConfig(endpoints={**fast.endpoints, **smart.endpoints})


async def _call(config: ResourceConfig, rows: int, executor: str,
                options: dict[str, Any]) -> tuple[int, int, dict[str, float]]:
    pipeline = FanOut().bind(resources=config, progress=False, streaming=True,
                             executor=executor, executor_options=options)
    results = await pipeline([fanout_prompt(i) for i in range(rows)])
    endpoints = pipeline.last_run.endpoints
    seen = {a: endpoints[a]["latency_mean"] or 0.0 for a in ("fast", "smart") if a in endpoints}
    indices = {r.index for r in results}
    return sum(1 for r in results if not r.ok), rows - len(indices), seen


def measure_run(label: str, server: Any, config: ResourceConfig, rows: int, executor: str,
                options: dict[str, Any] | None = None) -> Run:
    """Run ``rows`` rows once with ``executor`` and collect the server's view."""
    options = options or {}
    server.reset_stats()
    sampler = InFlightSampler(server)
    with sampler, measure() as t:
        failed, missing, seen = asyncio.run(_call(config, rows, executor, options))
    stats = server.stats()
    run = Run(label, rows, t.wall, t.cpu, failed, missing, stats.total_requests,
              stats.rate_limited, stats.max_in_flight_by_model.get(FAST_MODEL, 0),
              stats.max_in_flight_by_model.get(SMART_MODEL, 0), load_average(), seen)
    run.utilization = sampler.utilization()
    run.edges = sampler.idle_edges()
    if executor == "ray" and "limits_namespace" in options:
        run.limiter = limiter_stats(options["limits_namespace"])
    print(f"{label:28} wall {run.wall:7.3f}s cpu {run.cpu:6.3f}s max in flight "
          f"{run.max_fast}/{run.max_smart} requests {run.requests} 429s {run.rate_limited} "
          f"failed {failed} missing {missing} load {run.load} utilization "
          f"{run.utilization} idle start/end {run.edges}", flush=True)
    return run


class InFlightSampler:
    """Polls the server's in-flight counts (every ``period`` s) while a run is measured.

    Mean in flight / limit over the steady part of the run (first and last 5% of samples
    dropped: the pipeline's own ramp-up and tail) is how fully the limit was used,
    independent of how slow a loaded box made each request.
    """

    def __init__(self, server: Any, period: float = 0.1) -> None:
        self.server = server
        self.period = period
        self.samples: list[tuple[int, int]] = []
        self.busy: list[float] = []  # sample times with a request in flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.ended = time.perf_counter() - self.started

    def idle_edges(self) -> tuple[float, float]:
        """Seconds before the first and after the last sample with a request in flight."""
        if not self.busy:
            return 0.0, 0.0
        return self.busy[0], self.ended - self.busy[-1]

    def _poll(self) -> None:
        self.started = time.perf_counter()
        while not self._stop.wait(self.period):
            try:
                by_model = self.server.stats().in_flight_by_model
            except Exception:  # the server is busy; skip a sample
                continue
            sample = (by_model.get(FAST_MODEL, 0), by_model.get(SMART_MODEL, 0))
            self.samples.append(sample)
            if any(sample):
                self.busy.append(time.perf_counter() - self.started)

    def utilization(self) -> dict[str, float]:
        """Mean in flight / limit of ``fast`` and ``smart`` over the steady part."""
        cut = len(self.samples) // 20
        steady = self.samples[cut:len(self.samples) - cut] or [(0, 0)]
        return {"fast": sum(f for f, _ in steady) / len(steady) / FAST_LIMIT,
                "smart": sum(m for _, m in steady) / len(steady) / SMART_LIMIT}


def limiter_stats(namespace: str) -> dict[str, Any]:
    """Counters of the cluster-wide limiter actors of ``fast`` and ``smart``."""
    import ray

    from plait_ray.limits import actor_name

    out: dict[str, Any] = {}
    for alias in ("fast", "smart"):
        try:
            handle = ray.get_actor(actor_name(alias), namespace=namespace)
            out[alias] = ray.get(handle.stats.remote(), timeout=10)
        except Exception as exc:  # stats are a bonus; never fail the bench on them
            out[alias] = {"error": repr(exc)}
    return out


class RayCluster:
    """Head + 2 worker nodes on this machine; this process connects as the driver."""

    def __init__(self, cpus_per_node: int) -> None:
        self.cpus_per_node = cpus_per_node

    def __enter__(self) -> RayCluster:
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": self.cpus_per_node, "include_dashboard": False,
            "_system_config": HEALTH})
        for _ in range(2):
            self.cluster.add_node(num_cpus=self.cpus_per_node)
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address)
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        from plait_ray.worker import shutdown_workers

        try:
            shutdown_workers()
        finally:
            ray.shutdown()
            self.cluster.shutdown()


# --- the two parts ------------------------------------------------------------------------------

def fanout_limit(rows: int, latency: float) -> float:
    """The physical limit of the fan-out workload under the global concurrency limits."""
    return max(2 * latency, 4 * rows * latency / FAST_LIMIT, rows * latency / SMART_LIMIT)


def part_fanout(args: argparse.Namespace) -> str:
    rows, latency = args.rows, args.latency
    runs: list[Run] = []
    with LLMServer.spawn(**server_settings(latency)) as server:
        config = resources(server)
        if not args.skip_local:
            runs.append(measure_run("local", server, config, rows, "local"))
        with RayCluster(args.cpus_per_node):
            options = {"limits_namespace": "bench-ray-fanout", **executor_options(args)}
            warm = measure_run("ray (cold: 200-row warm-up)", server, config,
                               min(200, rows), "ray", options)
            for n in range(args.repeat):
                runs.append(measure_run(f"ray (warm workers) #{n + 1}", server, config, rows,
                                        "ray", options))
    return fanout_report(runs, warm, rows, latency, args)


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """``workers`` / ``rows_per_chunk`` overrides from the command line (default: adaptive)."""
    options: dict[str, Any] = {}
    if args.workers:
        options["workers"] = args.workers
    if args.rows_per_chunk:
        options["rows_per_chunk"] = args.rows_per_chunk
    return options


def part_rate(args: argparse.Namespace) -> str:
    rows, latency = args.rate_rows, args.latency
    cap_fast, cap_smart = args.server_rate_fast, args.server_rate_smart
    settings = server_settings(latency, rate_limit={FAST_MODEL: cap_fast,
                                                     SMART_MODEL: cap_smart})
    variants = [("under", 0.8), ("over", 1.5)]
    runs: dict[str, list[Run]] = {}
    with LLMServer.spawn(**settings) as server:
        configs = {name: resources(server, f * cap_fast * 60, f * cap_smart * 60)
                   for name, f in variants}
        if not args.skip_local:
            for name, f in variants:
                runs.setdefault(name, []).append(measure_run(
                    f"local, rate {f:g} x server cap", server, configs[name], rows, "local"))
        with RayCluster(args.cpus_per_node):
            # Warm the workers without a rate limit in play (a separate limiter namespace).
            measure_run("ray warm-up (not reported)", server, resources(server), 100, "ray",
                        {"limits_namespace": "bench-ray-rate-warmup"})
            for name, f in variants:
                options = {"limits_namespace": f"bench-ray-rate-{name}",
                           **executor_options(args)}
                # Start this variant's limiter actors (a new process each: ~1-3 s on this
                # box, paid once per Ray session and set of limits), then let buckets refill.
                measure_run(f"ray limiter warm-up {name} (not reported)", server,
                            configs[name], 20, "ray", options)
                time.sleep(1.5)
                runs.setdefault(name, []).append(measure_run(
                    f"ray, rate {f:g} x server cap", server, configs[name], rows, "ray",
                    options))
    return rate_report(runs, rows, latency, cap_fast, cap_smart, args)


# --- reporting ----------------------------------------------------------------------------------

def _row(run: Run, limit: float, local: Run | None) -> list[Any]:
    seen = run.latency
    observed = 0.0
    if seen.get("fast") and seen.get("smart"):
        # The concurrency limit recomputed with the latency the driver saw (a loaded box
        # slows each request): separates scheduling from per-request slowness.
        observed = max(seen["fast"] + seen["smart"], 4 * run.rows * seen["fast"] / FAST_LIMIT,
                       run.rows * seen["smart"] / SMART_LIMIT)
    return [
        run.label, fmt_s(run.wall), fmt_ratio(run.wall / limit),
        fmt_ratio(run.wall / local.wall) if local is not None and local is not run else "-",
        f"{seen.get('fast', 0) * 1000:.0f}/{seen.get('smart', 0) * 1000:.0f}",
        fmt_ratio(run.wall / observed) if observed else "-",
        f"{run.utilization.get('fast', 0):.0%}/{run.utilization.get('smart', 0):.0%}",
        f"{run.edges[0]:.2f}/{run.edges[1]:.2f}",
        fmt_s(run.cpu), f"{run.max_fast}/{run.max_smart}", run.requests, run.rate_limited,
        run.failed, run.missing, run.load,
    ]


HEADERS = ["run", "wall s", "wall / limit", "wall / local", "observed latency ms fast/smart",
           "wall / concurrency limit at observed latency",
           "steady mean in flight / limit fast/smart",
           "s before first / after last request", "driver CPU s",
           "server max in flight fast/smart", "requests", "429s", "failed rows",
           "missing rows", "load avg at end (1/5/15)"]


def _cluster_line(args: argparse.Namespace) -> str:
    return (f"- cluster: `ray.cluster_utils.Cluster`, head + 2 worker nodes, num_cpus="
            f"{args.cpus_per_node} each, health checks 500 ms x 3, all on this machine; "
            "driver = this process; RowWorker actors reserve 0.1 CPU each; executor_options "
            f"{executor_options(args) or '(defaults: adaptive workers and chunks)'}")


def fanout_report(runs: list[Run], warm: Run, rows: int, latency: float,
                  args: argparse.Namespace) -> str:
    limit = fanout_limit(rows, latency)
    local = next((r for r in runs if r.label == "local"), None)
    lines = ["## Fan-out: 4 fast + 1 smart per row, global limits 128/32", "",
             *header_lines([
                 _cluster_line(args),
                 f"- workload: {rows} rows x (4 `fast` + 1 `smart`) = {5 * rows} calls, server "
                 f"latency {latency * 1000:.0f} ms; GLOBAL `fast` max_concurrent={FAST_LIMIT}, "
                 f"`smart`={SMART_LIMIT}",
                 f"- physical limit = max(2 x {latency:g}, {4 * rows} x {latency:g} / "
                 f"{FAST_LIMIT}, {rows} x {latency:g} / {SMART_LIMIT}) = {limit:.3f} s; "
                 f"target Ray <= {TARGET} x",
                 "- cold run (first call: starts the worker actors and limiters): "
                 f"{warm.rows} rows in {fmt_s(warm.wall)} s (load {warm.load})",
                 ""])]
    lines.append(table(HEADERS, [_row(r, limit, local) for r in runs]))
    lines.append("")
    for run in runs:
        if run.label == "local":
            continue
        ratio = run.wall / limit
        within = run.max_fast <= FAST_LIMIT and run.max_smart <= SMART_LIMIT
        lines.append(f"- {run.label}: wall {fmt_ratio(ratio)} the limit -> "
                     f"{'MET' if ratio <= TARGET else 'MISSED'}; server in flight within "
                     f"the global limits: {'YES' if within else 'NO'} "
                     f"({run.max_fast}/{run.max_smart} vs {FAST_LIMIT}/{SMART_LIMIT}); "
                     f"rows complete: {'YES' if not run.missing and not run.failed else 'NO'}")
        lines += _limiter_lines(run)
    return "\n".join(lines)


def _limiter_lines(run: Run) -> list[str]:
    out: list[str] = []
    for alias, s in run.limiter.items():
        if "error" in s:
            continue
        out.append(f"  - limiter `{alias}` (cumulative since it started): leases created "
                   f"{s['leases_created']}, slots granted {s['granted_slots']}, requests "
                   f"granted {s['granted_requests']}, 429s reported {s['rate_limited']}, "
                   f"rate now {s['rate_per_min']} /min")
    return out


def rate_report(runs: dict[str, list[Run]], rows: int, latency: float, cap_fast: float,
                cap_smart: float, args: argparse.Namespace) -> str:
    lines = ["## Rate-limited fan-out: plait rate_limit 20% under / 50% over the server's cap",
             "", *header_lines([
                 _cluster_line(args),
                 f"- workload: {rows} rows x (4 `fast` + 1 `smart`) = {5 * rows} calls, server "
                 f"latency {latency * 1000:.0f} ms, `fast` max_concurrent={FAST_LIMIT}, "
                 f"`smart`={SMART_LIMIT}, max_retries=10",
                 f"- server rate cap per model: `{FAST_MODEL}` {cap_fast:g} req/s, "
                 f"`{SMART_MODEL}` {cap_smart:g} req/s (token bucket, burst = 1 s worth; "
                 "beyond it 429 with retry-after)",
                 "- plait `rate_limit` (requests/min) = factor x server cap x 60; "
                 "limit = the time the binding rate needs: max(4N / rate_fast, N / rate_smart) "
                 "with rate = min(plait rate, server cap)",
                 ""])]
    for name, factor in (("under", 0.8), ("over", 1.5)):
        group = runs.get(name, [])
        if not group:
            continue
        eff = min(factor, 1.0)
        limit = max(4 * rows / (eff * cap_fast), rows / (eff * cap_smart),
                    fanout_limit(rows, latency))
        local = next((r for r in group if r.label.startswith("local")), None)
        lines += [f"### rate_limit = {factor:g} x the server's cap "
                  f"(fast {factor * cap_fast * 60:g}/min, smart {factor * cap_smart * 60:g}/min)",
                  f"- limit = {limit:.3f} s", "",
                  table(HEADERS, [_row(r, limit, local) for r in group]), ""]
        for run in group:
            share = run.rate_limited / max(1, run.requests)
            complete = not run.missing and not run.failed
            if name == "under":
                verdict = "MET" if run.rate_limited == 0 and complete else "MISSED"
                lines.append(f"- {run.label}: {run.rate_limited} 429s (target 0), rows "
                             f"complete {complete} -> {verdict}")
            else:
                verdict = "MET" if share < RATE_TARGET_429 and complete else "MISSED"
                lines.append(f"- {run.label}: 429s {run.rate_limited}/{run.requests} = "
                             f"{share:.2%} (target < 5%), every row present {complete} "
                             f"-> {verdict}")
            lines += _limiter_lines(run)
        lines.append("")
    return "\n".join(lines)


# --- issue 10: CPU of a Ray run against the local executor ---------------------------------

CPU_FAST, CPU_SMART = 32, 8


class TreeCPU:
    """User + sys CPU seconds of this process and its descendants (minus ``exclude``'s tree).

    Ray's processes (GCS, raylet, workers, actors) are descendants of a driver that started
    a local Ray, so their CPU counts; a process that ends during a measurement loses its
    share (Ray's warm workers do not end).
    """

    def __init__(self, exclude: int | None) -> None:
        import psutil

        self._psutil = psutil
        self.exclude = exclude

    def snapshot(self) -> dict[int, float]:
        psutil = self._psutil
        me = psutil.Process()
        skip: set[int] = set()
        if self.exclude is not None:
            try:
                root = psutil.Process(self.exclude)
                skip = {self.exclude, *(p.pid for p in root.children(recursive=True))}
            except psutil.NoSuchProcess:
                skip = {self.exclude}
        out: dict[int, float] = {}
        for proc in [me, *me.children(recursive=True)]:
            if proc.pid in skip:
                continue
            try:
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return out

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def cpu_resources(server: Any) -> ResourceConfig:
    fast = server.resource_config({"fast": FAST_MODEL}, max_concurrent=CPU_FAST)
    smart = server.resource_config({"smart": SMART_MODEL}, max_concurrent=CPU_SMART)
    return ResourceConfig(endpoints={**fast.endpoints, **smart.endpoints})


def _cpu_run(label: str, server: Any, tree: TreeCPU, rows: int, executor: str,
             options: dict[str, Any]) -> dict[str, Any]:
    server.reset_stats()
    before = tree.snapshot()
    with measure() as t:
        failed, missing, seen = asyncio.run(_call(cpu_resources(server), rows, executor,
                                                  options))
    cpu = tree.used(before, tree.snapshot())
    stats = server.stats()
    run = {"label": label, "wall": t.wall, "driver_cpu": t.cpu, "cpu": cpu, "failed": failed,
           "missing": missing, "requests": stats.total_requests, "seen": seen,
           "max": (stats.max_in_flight_by_model.get(FAST_MODEL, 0),
                   stats.max_in_flight_by_model.get(SMART_MODEL, 0)), "load": load_average()}
    print(f"{label:30} wall {t.wall:7.3f}s tree cpu {cpu:6.3f}s driver cpu {t.cpu:6.3f}s "
          f"max in flight {run['max']} failed {failed} missing {missing} load {run['load']}",
          flush=True)
    return run


def part_cpu(args: argparse.Namespace) -> str:
    import ray

    from plait_ray.worker import shutdown_workers

    rows, latency = args.cpu_rows, args.cpu_latency
    with LLMServer.spawn(**server_settings(latency)) as server:
        tree = TreeCPU(getattr(server, "pid", None))
        local = _cpu_run("local", server, tree, rows, "local", {})
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            options = {"limits_namespace": "bench-ray-cpu"}
            _cpu_run("ray warm-up (not reported)", server, tree, min(200, rows), "ray",
                     options)
            rays = [_cpu_run(f"ray (warm) #{n + 1}", server, tree, rows, "ray", options)
                    for n in range(args.repeat)]
        finally:
            shutdown_workers()
            ray.shutdown()
    return cpu_report(local, rays, rows, latency)


def cpu_report(local: dict[str, Any], rays: list[dict[str, Any]], rows: int,
               latency: float) -> str:
    limit = max(2 * latency, 4 * rows * latency / CPU_FAST, rows * latency / CPU_SMART)
    lines = header_lines([
        f"- workload: {rows} rows x (4 `fast` + 1 `smart`) = {5 * rows} calls, server "
        f"latency {latency * 1000:.0f} ms, `fast` max_concurrent={CPU_FAST}, "
        f"`smart`={CPU_SMART}; physical limit {limit:.3f} s",
        "- local executor and Ray in the same run and process; Ray = a local Ray started "
        "by the bench (one node, num_cpus=2), default executor_options, warm workers",
        "- CPU = user + sys of the whole process tree (driver + Ray's GCS, raylet, workers, "
        "limiter actors), loopback server excluded; driver CPU = this process only",
        "- targets (issue 10): Ray wall <= 1.2 x limit, Ray CPU <= 2 x local CPU",
        ""])
    rows_out = []
    for run in [local, *rays]:
        rows_out.append([run["label"], fmt_s(run["wall"]), fmt_ratio(run["wall"] / limit),
                         fmt_s(run["cpu"]), fmt_ratio(run["cpu"] / local["cpu"]),
                         fmt_s(run["driver_cpu"]),
                         f"{run['seen'].get('fast', 0) * 1000:.1f}/"
                         f"{run['seen'].get('smart', 0) * 1000:.1f}",
                         f"{run['max'][0]}/{run['max'][1]}", run["requests"],
                         run["failed"] + run["missing"], run["load"]])
    lines.append(table(["run", "wall s", "wall / limit", "tree CPU s", "CPU / local",
                        "driver CPU s", "observed latency ms fast/smart",
                        "server max in flight", "requests", "failed+missing rows",
                        "load avg at end"], rows_out))
    lines.append("")
    for run in rays:
        wall_ok = run["wall"] / limit <= 1.2
        cpu_ok = run["cpu"] / local["cpu"] <= 2.0
        lines.append(f"- {run['label']}: wall {fmt_ratio(run['wall'] / limit)} the limit "
                     f"(local {fmt_ratio(local['wall'] / limit)}) -> "
                     f"{'MET' if wall_ok else 'MISSED'}; CPU {fmt_ratio(run['cpu'] / local['cpu'])}"
                     f" local -> {'MET' if cpu_ok else 'MISSED'}")
    return "\n".join(lines)


CPU_TITLE = "Ray CPU and wall beside the local executor (issue 10)"


def write_cpu_section(body: str, path: Path = RESULTS) -> None:
    """Replace (or add, before ``## notes``) the ``ray_cpu`` section of bench/RESULTS.md.

    Everything else in the file (the hand-kept summary at its top, other sections) is kept
    as it is; the section's link is added to ``## Sections`` once.
    """
    text = path.read_text() if path.exists() else ""
    section = f"## {CPU_TITLE}\n<!-- section:ray_cpu -->\n\n{body.strip()}\n\n"
    found = re.search(r"(?ms)^## [^\n]*\n<!-- section:ray_cpu -->\n.*?(?=^## |\Z)", text)
    if found:
        text = text[:found.start()] + section + text[found.end():]
    else:
        notes = re.search(r"(?m)^## notes\b", text)
        at = notes.start() if notes else len(text)
        text = text[:at] + section + text[at:]
    anchor = re.sub(r"[^\w\- ]", "", CPU_TITLE.lower()).strip().replace(" ", "-")
    link = f"- [{CPU_TITLE}](#{anchor})"
    if link not in text:
        index = re.search(r"(?ms)^## Sections\n\n(?:- \[.*?\n)*", text)
        if index:
            links = index.group(0).rstrip("\n").split("\n")
            notes_link = [i for i, line in enumerate(links) if line.startswith("- [notes]")]
            links.insert(notes_link[0] if notes_link else len(links), link)
            text = text[:index.start()] + "\n".join(links) + "\n" + text[index.end():]
    path.write_text(text)
    print(f"\nwrote section 'ray_cpu' of {path}")


def write_part(key: str, body: str) -> None:
    """Replace section ``key`` of bench/results_ray.md (fanout first, then rate)."""
    text = RESULTS_RAY.read_text() if RESULTS_RAY.exists() else ""
    found = dict(re.findall(r"<!-- part:(\w+) -->\n(.*?)<!-- /part -->\n", text, re.S))
    found[key] = body.strip() + "\n"
    order = [k for k in ("fanout", "rate", "notes") if k in found]
    head = ("# plait_ray benchmarks (issue 4: performance on a Ray cluster)\n\n"
            "Written by `bench/bench_ray_fanout.py`, each part replacing its own section. The "
            "box is shared (2 cores): every row records the load average at its end.\n\n")
    RESULTS_RAY.write_text(head + "\n".join(
        f"<!-- part:{k} -->\n{found[k]}<!-- /part -->\n" for k in order))
    print(f"\nwrote part '{key}' of {RESULTS_RAY}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["fanout", "rate", "cpu", "all"], default="all")
    parser.add_argument("--cpu-rows", type=int, default=1000)
    parser.add_argument("--cpu-latency", type=float, default=0.05)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rate-rows", type=int, default=1200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--server-rate-fast", type=float, default=300.0)
    parser.add_argument("--server-rate-smart", type=float, default=100.0)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, help="executor_options['workers']")
    parser.add_argument("--rows-per-chunk", type=int,
                        help="executor_options['rows_per_chunk']")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    parts = ["fanout", "rate"] if args.part == "all" else [args.part]
    if args.part == "cpu":
        body = part_cpu(args)
        print()
        print(body)
        if not args.no_write:
            write_cpu_section(body)
        return
    for part in parts:
        body = part_fanout(args) if part == "fanout" else part_rate(args)
        print()
        print(body)
        if not args.no_write:
            write_part(part, body)


if __name__ == "__main__":
    main()
