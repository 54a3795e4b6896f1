"""Ray metrics from plait's event stream: requests, tokens, 429s, retries, latency, rows.

``RayMetricsSink`` is an ``EventSink`` for worker processes. Handling an event only updates
plain dicts; every ``flush_interval`` seconds (checked when an event arrives) the totals are
pushed to ``ray.util.metrics``, which Ray exports on each node's metrics port for Prometheus
(names gain Ray's ``ray_`` prefix there)::

    plait_requests{alias,node}              HTTP attempts sent (Counter)
    plait_request_errors{alias,node}        attempts that failed (Counter)
    plait_input_tokens{alias,node}          tokens sent (Counter)
    plait_output_tokens{alias,node}         tokens received (Counter)
    plait_rate_limited{alias,node}          429 replies (Counter)
    plait_retries{alias,node}               attempts retried (Counter)
    plait_in_flight{alias,node}             LLM nodes started and not finished (Gauge)
    plait_request_latency_s{alias,node}     seconds per attempt (Histogram)
    plait_rows{pipeline,status}             rows finished, status "ok" or "failed" (Counter)

Metric objects are made once per process (Ray registers metrics by name), so several sinks in
one worker share them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from ray.util.metrics import Counter, Gauge, Histogram

from plait.events import Event

__all__ = ["LATENCY_BUCKETS_S", "RayMetricsSink"]

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_MAX_SAMPLES = 1000  # latency samples kept per key and flush; the counters stay exact
_KEYS = ("alias", "node")

Key = tuple[str, str]


class _Metrics:
    """The process's metric objects."""

    def __init__(self) -> None:
        def counter(name: str, doc: str, keys: tuple[str, ...] = _KEYS) -> Counter:
            return Counter(name, description=doc, tag_keys=keys)

        self.counters = {
            "requests": counter("plait_requests", "HTTP attempts sent."),
            "request_errors": counter("plait_request_errors", "HTTP attempts that failed."),
            "input_tokens": counter("plait_input_tokens", "Input tokens sent."),
            "output_tokens": counter("plait_output_tokens", "Output tokens received."),
            "rate_limited": counter("plait_rate_limited", "HTTP 429 replies."),
            "retries": counter("plait_retries", "Attempts retried."),
        }
        self.rows = counter("plait_rows", "Rows finished.", ("pipeline", "status"))
        self.in_flight = Gauge("plait_in_flight", description="LLM nodes in flight.",
                               tag_keys=_KEYS)
        self.latency = Histogram("plait_request_latency_s", description="Seconds per attempt.",
                                 boundaries=list(LATENCY_BUCKETS_S), tag_keys=_KEYS)


_process_metrics: list[_Metrics] = []


def _metrics() -> _Metrics:
    if not _process_metrics:
        _process_metrics.append(_Metrics())
    return _process_metrics[0]


class RayMetricsSink:
    """Aggregates plait events locally and pushes them to Ray metrics periodically.

    Args:
        pipeline: Pipeline name for the row counters.
        flush_interval: Seconds between pushes to Ray.
        clock: Monotonic seconds; injectable for tests.

    Example:
        >>> sink = RayMetricsSink("Summarize")  # doctest: +SKIP
        >>> runtime = WorkerRuntime(module, graph, resources, events=sink)  # doctest: +SKIP
    """

    def __init__(self, pipeline: str, *, flush_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.flush_interval = flush_interval
        self._clock = clock
        self._last_flush = clock()
        self._counts: dict[str, defaultdict[Key, int]] = defaultdict(
            lambda: defaultdict(int))
        self._in_flight: defaultdict[Key, int] = defaultdict(int)
        self._latency: defaultdict[Key, list[float]] = defaultdict(list)
        self._rows = {"ok": 0, "failed": 0}

    def __call__(self, event: Event) -> None:
        """Count one event (the ``EventSink`` contract)."""
        key = (event.alias or "", event.node_id or "")
        kind = event.kind
        if kind == "request":
            counts = self._counts
            counts["requests"][key] += 1
            attrs = event.attrs
            if attrs.get("error") is not None:
                counts["request_errors"][key] += 1
            counts["input_tokens"][key] += int(attrs.get("input_tokens") or 0)
            counts["output_tokens"][key] += int(attrs.get("output_tokens") or 0)
            samples = self._latency[key]
            if len(samples) < _MAX_SAMPLES:
                samples.append(event.end - event.start)
        elif kind == "rate_limited":
            self._counts["rate_limited"][key] += 1
        elif kind == "retry":
            self._counts["retries"][key] += 1
        elif kind == "ready":
            self._in_flight[key] += 1
        elif kind == "node":
            self._in_flight[key] -= 1
        if self._clock() - self._last_flush >= self.flush_interval:
            self.flush()

    def rows_finished(self, ok: int, failed: int) -> None:
        """Count finished rows (failed rows emit no event, so runners report them here)."""
        self._rows["ok"] += ok
        self._rows["failed"] += failed
        if self._clock() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Push the totals gathered since the last flush to Ray."""
        self._last_flush = self._clock()
        metrics = _metrics()
        for name, counts in self._counts.items():
            counter = metrics.counters[name]
            for (alias, node), value in counts.items():
                if value:
                    counter.inc(value, tags=_tags(alias, node))
        self._counts.clear()
        for (alias, node), value in self._in_flight.items():
            metrics.in_flight.set(value, tags=_tags(alias, node))
        for (alias, node), samples in self._latency.items():
            tags = _tags(alias, node)
            for sample in samples:
                metrics.latency.observe(sample, tags=tags)
        self._latency.clear()
        for status, value in self._rows.items():
            if value:
                metrics.rows.inc(value, tags={"pipeline": self.pipeline, "status": status})
                self._rows[status] = 0


def _tags(alias: str, node: str) -> dict[str, str]:
    return {"alias": alias, "node": node}
