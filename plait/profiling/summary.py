"""A run summary per endpoint: volume, cost, latency, utilisation and scheduling bubbles.

A *bubble* is time an endpoint could have been used but was not: at least one of its nodes was
ready (between its ``ready`` instant and its first ``request``), fewer than ``max_concurrent``
requests were in flight, and no rate-limit wait or 429 pause was in progress. Bubbles point at
scheduling overhead in plait itself (or a starved event loop), not at the provider.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plait.events import Event

__all__ = ["Bubble", "EndpointSummary", "RunSummary", "find_bubbles", "summarize"]

_TOP_BUBBLES = 5


@dataclass(frozen=True, slots=True)
class Bubble:
    """A maximal idle gap of one endpoint while work for it was ready.

    Attributes:
        start: Gap start, on the events' clock (``time.perf_counter()`` seconds).
        duration: Gap length in seconds.
        node_ids: Nodes that were ready during the gap, sorted.
    """

    start: float
    duration: float
    node_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    """What one endpoint did during a run.

    Attributes:
        alias: The endpoint alias.
        requests: HTTP attempts (retries included).
        errors: Attempts answered with a status >= 400.
        input_tokens: Input tokens over all attempts that reported usage.
        output_tokens: Output tokens over all attempts that reported usage.
        cost: Estimated cost, or None if no prices were given.
        retries: Attempts that failed and were retried.
        rate_limited: 429 responses.
        latency_p50: Median request latency in seconds (None without requests).
        latency_p95: 95th percentile request latency in seconds.
        latency_p99: 99th percentile request latency in seconds.
        busy_seconds: Time with at least one request in flight.
        utilisation: ``busy_seconds / wall_time`` (None if wall time is not positive).
        max_concurrent: The concurrency limit, None for unlimited.
        slot_utilisation: Busy slot-seconds over ``max_concurrent * wall_time`` (None when
            unlimited or wall time is not positive).
        bubble_count: Number of bubbles at least ``min_bubble`` long.
        bubble_seconds: Their total length.
        top_bubbles: The longest bubbles, longest first (at most 5).
    """

    alias: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    retries: int
    rate_limited: int
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    busy_seconds: float
    utilisation: float | None
    max_concurrent: int | None
    slot_utilisation: float | None
    bubble_count: int
    bubble_seconds: float
    top_bubbles: tuple[Bubble, ...] = ()


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The summary of one run: totals and one ``EndpointSummary`` per alias.

    Attributes:
        wall_time: Wall-clock seconds of the run.
        rows: Rows seen (``row`` spans).
        failed_nodes: ``node`` spans that ended with ``ok=False``.
        endpoints: Per-alias summaries, ordered by alias.
        t0: Earliest event time; bubble offsets in ``__str__`` and ``to_dict`` count from it.
    """

    wall_time: float
    rows: int
    failed_nodes: int
    endpoints: dict[str, EndpointSummary] = field(default_factory=dict[str, EndpointSummary])
    t0: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (bubbles gain ``offset``: seconds since ``t0``)."""
        endpoints: dict[str, Any] = {}
        for alias, ep in self.endpoints.items():
            bubbles = [
                {
                    "start": b.start,
                    "offset": b.start - self.t0,
                    "duration": b.duration,
                    "node_ids": list(b.node_ids),
                }
                for b in ep.top_bubbles
            ]
            fields = {name: getattr(ep, name) for name in EndpointSummary.__dataclass_fields__}
            endpoints[alias] = {**fields, "top_bubbles": bubbles}
        return {
            "wall_time": self.wall_time,
            "rows": self.rows,
            "failed_nodes": self.failed_nodes,
            "endpoints": endpoints,
        }

    def __str__(self) -> str:
        lines = [
            f"plait run: {self.wall_time:.2f} s wall, {self.rows} rows, "
            f"{self.failed_nodes} failed nodes"
        ]
        header = (
            "alias",
            "reqs",
            "err",
            "tok in",
            "tok out",
            "cost",
            "retry",
            "429",
            "p50",
            "p95",
            "p99",
            "util",
            "slots",
            "bubbles",
        )
        table = [header, *(_row(ep) for ep in self.endpoints.values())]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        for ep in self.endpoints.values():
            for b in ep.top_bubbles:
                lines.append(
                    f"  {ep.alias} bubble at +{b.start - self.t0:.3f}s for "
                    f"{_secs(b.duration)}: {', '.join(b.node_ids)}"
                )
        return "\n".join(lines).rstrip()


def summarize(
    events: Iterable[Event],
    *,
    max_concurrent: Mapping[str, int | None],
    wall_time: float,
    endpoint_stats: Mapping[str, Mapping[str, Any]] | None = None,
    min_bubble: float = 0.001,
) -> RunSummary:
    """Summarise a run's events per endpoint.

    Args:
        events: The run's events (any order; merged from several processes is fine).
        max_concurrent: Concurrency limit per alias (None = unlimited). Aliases listed here
            appear in the summary even if they made no request.
        wall_time: Wall-clock seconds of the run, the denominator of utilisation.
        endpoint_stats: Optional per-alias stats from the endpoint pools; ``"cost"`` is used
            as is, else ``"input_cost_per_1m"`` / ``"output_cost_per_1m"`` price the tokens.
        min_bubble: Bubbles shorter than this many seconds are scheduling noise and ignored.

    Returns:
        The ``RunSummary``.

    Example:
        >>> print(summarize(profiler.events, max_concurrent={"fast": 8}, wall_time=12.5))
    """
    events = list(events)
    stats = endpoint_stats or {}
    by_alias: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.alias is not None:
            by_alias[event.alias].append(event)
    aliases = sorted(set(max_concurrent) | set(by_alias) | set(stats))
    endpoints = {
        alias: _summarize_endpoint(
            alias,
            by_alias.get(alias, []),
            max_concurrent.get(alias),
            wall_time,
            stats.get(alias, {}),
            min_bubble,
        )
        for alias in aliases
    }
    return RunSummary(
        wall_time=wall_time,
        rows=sum(1 for e in events if e.kind == "row"),
        failed_nodes=sum(1 for e in events if e.kind == "node" and e.attrs.get("ok") is False),
        endpoints=endpoints,
        t0=min((e.start for e in events), default=0.0),
    )


def find_bubbles(
    events: Sequence[Event], max_concurrent: int | None, *, min_bubble: float = 0.001
) -> list[Bubble]:
    """Find the bubbles of one endpoint, in time order.

    Args:
        events: Events of a single alias.
        max_concurrent: Its concurrency limit (None = unlimited, never saturated).
        min_bubble: Gaps shorter than this many seconds are ignored.
    """
    ready: dict[float, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    flight: dict[float, int] = defaultdict(int)
    pause: dict[float, int] = defaultdict(int)
    for start, end, node_id in _ready_windows(events):
        ready[start][node_id] += 1
        ready[end][node_id] -= 1
    for event in events:
        if event.kind == "request":
            flight[event.start] += 1
            flight[event.end] -= 1
        elif event.kind == "rate_wait" or event.kind == "rate_limited":
            end = event.end
            if event.kind == "rate_limited":
                end = event.start + float(event.attrs.get("retry_after") or 0.0)
            if end > event.start:
                pause[event.start] += 1
                pause[end] -= 1
    limit = math.inf if max_concurrent is None else max_concurrent
    times = sorted(set(ready) | set(flight) | set(pause))
    active: dict[str, int] = defaultdict(int)
    in_flight = paused = 0
    gaps: list[tuple[float, float, set[str]]] = []
    for t, t_next in itertools.pairwise(times):
        for node_id, delta in ready.get(t, {}).items():
            active[node_id] += delta
        in_flight += flight.get(t, 0)
        paused += pause.get(t, 0)
        waiting = {node_id for node_id, n in active.items() if n > 0}
        if not waiting or in_flight >= limit or paused > 0:
            continue
        if gaps and gaps[-1][1] == t:  # idle segments that touch form one maximal gap
            gaps[-1] = (gaps[-1][0], t_next, gaps[-1][2] | waiting)
        else:
            gaps.append((t, t_next, waiting))
    return [
        Bubble(start, end - start, tuple(sorted(ids)))
        for start, end, ids in gaps
        if end - start >= min_bubble
    ]


def _ready_windows(events: Sequence[Event]) -> list[tuple[float, float, str]]:
    """(ready time, first request start after it, node id) per ready LLM node."""
    starts: dict[tuple[str | None, int | None], list[float]] = defaultdict(list)
    for event in events:
        if event.kind == "request":
            starts[(event.node_id, event.row)].append(event.start)
    for values in starts.values():
        values.sort()
    windows: list[tuple[float, float, str]] = []
    for event in events:
        if event.kind != "ready":
            continue
        attempts = starts.get((event.node_id, event.row), [])
        first = bisect.bisect_left(attempts, event.start)
        # A node that never sent a request (cached, failed early) did not wait for the endpoint.
        if first < len(attempts) and attempts[first] > event.start:
            windows.append((event.start, attempts[first], event.node_id or "?"))
    return windows


def _summarize_endpoint(
    alias: str,
    events: list[Event],
    max_concurrent: int | None,
    wall_time: float,
    stats: Mapping[str, Any],
    min_bubble: float,
) -> EndpointSummary:
    requests = [e for e in events if e.kind == "request"]
    latencies = sorted(e.end - e.start for e in requests)
    input_tokens = sum(int(e.attrs.get("input_tokens") or 0) for e in requests)
    output_tokens = sum(int(e.attrs.get("output_tokens") or 0) for e in requests)
    busy = _union_length([(e.start, e.end) for e in requests])
    slot_seconds = sum(latencies)
    has_wall = wall_time > 0
    bubbles = find_bubbles(events, max_concurrent, min_bubble=min_bubble)
    return EndpointSummary(
        alias=alias,
        requests=len(requests),
        errors=sum(1 for e in requests if _status(e) >= 400),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=_cost(stats, input_tokens, output_tokens),
        retries=sum(1 for e in events if e.kind == "retry"),
        rate_limited=sum(1 for e in events if e.kind == "rate_limited"),
        latency_p50=_percentile(latencies, 0.50),
        latency_p95=_percentile(latencies, 0.95),
        latency_p99=_percentile(latencies, 0.99),
        busy_seconds=busy,
        utilisation=busy / wall_time if has_wall else None,
        max_concurrent=max_concurrent,
        slot_utilisation=(
            slot_seconds / (max_concurrent * wall_time) if has_wall and max_concurrent else None
        ),
        bubble_count=len(bubbles),
        bubble_seconds=sum(b.duration for b in bubbles),
        top_bubbles=tuple(sorted(bubbles, key=lambda b: -b.duration)[:_TOP_BUBBLES]),
    )


def _status(event: Event) -> int:
    status = event.attrs.get("status")
    return status if isinstance(status, int) else 0


def _cost(stats: Mapping[str, Any], input_tokens: int, output_tokens: int) -> float | None:
    if stats.get("cost") is not None:
        return float(stats["cost"])
    price_in, price_out = stats.get("input_cost_per_1m"), stats.get("output_cost_per_1m")
    if price_in is None and price_out is None:
        return None
    return (input_tokens * float(price_in or 0) + output_tokens * float(price_out or 0)) / 1e6


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _union_length(spans: list[tuple[float, float]]) -> float:
    total = 0.0
    cur_start = cur_end = -math.inf
    for start, end in sorted(spans):
        if start > cur_end:
            total += cur_end - cur_start if cur_end > cur_start else 0.0
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    return total + (cur_end - cur_start if cur_end > cur_start else 0.0)


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _row(ep: EndpointSummary) -> tuple[str, ...]:
    return (
        ep.alias,
        str(ep.requests),
        str(ep.errors),
        str(ep.input_tokens),
        str(ep.output_tokens),
        "-" if ep.cost is None else f"${ep.cost:.4f}",
        str(ep.retries),
        str(ep.rate_limited),
        _secs(ep.latency_p50),
        _secs(ep.latency_p95),
        _secs(ep.latency_p99),
        _pct(ep.utilisation),
        _pct(ep.slot_utilisation),
        f"{ep.bubble_count} / {_secs(ep.bubble_seconds)}",
    )
