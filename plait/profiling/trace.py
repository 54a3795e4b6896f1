"""Chrome Trace Event JSON from plait's event stream, for Perfetto (ui.perfetto.dev).

Layout of the trace:

- process "pipeline": ``row`` spans and ``node`` spans, each in lanes of non-overlapping spans;
- process "endpoint <alias>" per endpoint: one track per concurrency slot ("slot N") carrying the
  ``request`` spans, "waits N" lanes for ``queue_wait`` / ``rate_wait``, a "retries & 429s" track
  for the instants, and counters ``in_flight``, ``queued`` and ``rate_waiting``.

Events merged from several processes (Ray workers) name their origin in ``attrs["worker"]`` or
``attrs["pid"]``; slots of different origins get different tracks. Every output event carries a
unique ``args["id"]``, except counters: Perfetto plots every numeric argument of a "C" event as a
series, so a counter's id is the top-level ``"eid"`` instead.
"""

from __future__ import annotations

import gzip
import heapq
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from plait.events import Event

__all__ = ["TraceProfiler", "assign_lanes", "chrome_trace"]

_ENDPOINT_KINDS = frozenset({"request", "queue_wait", "rate_wait", "retry", "rate_limited",
                             "cache_hit"})
# Perfetto keys thread names by tid alone, so tids are unique across the whole trace and kept
# clear of the small pids (a tid equal to its pid would be taken for the main thread).
_FIRST_TID = 1000
_JSON_SCALARS = (str, int, float, bool, type(None))


class TraceProfiler:
    """An event sink that records events and writes them as a Chrome/Perfetto trace.

    Recording is one list append, so it is cheap enough to leave on for a whole run.

    Example:
        >>> profiler = TraceProfiler()
        >>> # results = run(pipeline, rows, event_sink=profiler)
        >>> # profiler.write("run.json")  # open in https://ui.perfetto.dev
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        """Record one event (the ``EventSink`` contract)."""
        self.events.append(event)

    def extend(self, events: Iterable[Event]) -> None:
        """Record a batch of events, e.g. shipped back from a Ray worker."""
        self.events.extend(events)

    def to_chrome_trace(self) -> dict[str, Any]:
        """The recorded events as a Chrome Trace Event JSON object."""
        return chrome_trace(self.events)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace as JSON (gzip-compressed if the name ends in ``.gz``).

        Call it after the run: it does blocking file I/O.

        Returns:
            The path written.
        """
        out = Path(path)
        data = _dumps(self.to_chrome_trace())
        if out.suffix == ".gz":
            data = gzip.compress(data)
        out.write_bytes(data)
        return out


def _dumps(trace: dict[str, Any]) -> bytes:
    # orjson writes a 50,000-event trace ~10x faster than json, which keeps the end-of-run
    # cost of profile=True small next to the run itself.
    try:
        import orjson
    except ImportError:
        return json.dumps(trace, separators=(",", ":"), default=str).encode()
    return orjson.dumps(trace, default=str)


def assign_lanes(spans: Sequence[tuple[float, float]]) -> list[int]:
    """Give each ``(start, end)`` span the lowest lane free at its start.

    Spans in one lane never overlap (touching is allowed), and the number of lanes used is the
    largest number of spans overlapping at one instant, the fewest possible.

    Returns:
        The lane of each span, in input order.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    busy: list[tuple[float, int]] = []  # (end, lane) of spans still open
    free: list[int] = []
    lanes = [0] * len(spans)
    used = 0
    for i in order:
        start, end = spans[i]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, used = used, used + 1
        lanes[i] = lane
        heapq.heappush(busy, (end, lane))
    return lanes


def chrome_trace(events: Iterable[Event]) -> dict[str, Any]:
    """Build a Chrome Trace Event JSON object from plait events.

    Times become microseconds relative to the earliest event.

    Args:
        events: Events from one run, possibly merged from several processes.

    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ms"}``.
    """
    events = list(events)
    builder = _TraceBuilder(min((e.start for e in events), default=0.0))
    builder.add_pipeline([e for e in events if e.kind in ("row", "node")])
    by_alias: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.kind in _ENDPOINT_KINDS:
            by_alias[event.alias if event.alias is not None else "(no alias)"].append(event)
    for alias in sorted(by_alias):
        builder.add_endpoint(alias, by_alias[alias])
    return {"traceEvents": builder.out, "displayTimeUnit": "ms"}


def _origin(event: Event) -> str | None:
    origin = event.attrs.get("worker", event.attrs.get("pid"))
    return None if origin is None else str(origin)


def _jsonable(value: object) -> object:
    # Attrs may hold exceptions or other objects; the trace must stay valid JSON.
    return value if isinstance(value, _JSON_SCALARS) else str(value)


class _TraceBuilder:
    """Accumulates trace events, handing out pids, tids and unique ids."""

    def __init__(self, t0: float) -> None:
        self.out: list[dict[str, Any]] = []
        self._t0 = t0
        self._next_id = 0
        self._next_pid = 1
        self._next_tid = _FIRST_TID

    def _us(self, t: float) -> float:
        # Rounding is monotone, so spans that do not overlap in seconds do not overlap in µs.
        return round((t - self._t0) * 1e6, 3)

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _emit(self, event: dict[str, Any]) -> None:
        event.setdefault("args", {})["id"] = self._take_id()
        self.out.append(event)

    def _meta(self, name: str, pid: int, tid: int, args: dict[str, Any]) -> None:
        self._emit({"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args})

    def _process(self, name: str) -> int:
        pid, self._next_pid = self._next_pid, self._next_pid + 1
        self._meta("process_name", pid, pid, {"name": name})
        self._meta("process_sort_index", pid, pid, {"sort_index": pid})
        return pid

    def _thread(self, pid: int, name: str) -> int:
        # tids are handed out in display order, so they double as the sort index.
        tid, self._next_tid = self._next_tid, self._next_tid + 1
        self._meta("thread_name", pid, tid, {"name": name})
        self._meta("thread_sort_index", pid, tid, {"sort_index": tid})
        return tid

    def _span(self, event: Event, name: str, pid: int, tid: int, args: dict[str, Any]) -> None:
        ts = self._us(event.start)
        self._emit(
            {
                "name": name,
                "cat": event.kind,
                "ph": "X",
                "ts": ts,
                "dur": max(0.0, self._us(event.end) - ts),
                "pid": pid,
                "tid": tid,
                "args": args,
            }
        )

    def _laned(self, pid: int, label: str, spans: list[Event]) -> list[int]:
        """Lay spans out in lanes named ``label N``; returns each span's tid."""
        lanes = assign_lanes([(e.start, e.end) for e in spans])
        tids = [self._thread(pid, f"{label} {n}") for n in range(max(lanes, default=-1) + 1)]
        return [tids[lane] for lane in lanes]

    def add_pipeline(self, events: list[Event]) -> None:
        if not events:
            return
        pid = self._process("pipeline")
        rows = [e for e in events if e.kind == "row"]
        for event, tid in zip(rows, self._laned(pid, "rows", rows), strict=True):
            args = {"row": event.row, **_attrs(event)}
            self._span(event, f"row {event.row}", pid, tid, args)
        nodes = [e for e in events if e.kind == "node"]
        for event, tid in zip(nodes, self._laned(pid, "nodes", nodes), strict=True):
            args = {
                "node_id": event.node_id,
                "row": event.row,
                "alias": event.alias,
                **_attrs(event),
            }
            self._span(event, event.node_id or "node", pid, tid, args)

    def add_endpoint(self, alias: str, events: list[Event]) -> None:
        pid = self._process(f"endpoint {alias}")
        requests = [e for e in events if e.kind == "request"]
        waits = [e for e in events if e.kind in ("queue_wait", "rate_wait")]
        self._add_requests(pid, requests)
        for event, tid in zip(waits, self._laned(pid, "waits", waits), strict=True):
            args = {"node_id": event.node_id, "row": event.row, **_attrs(event)}
            self._span(event, event.kind, pid, tid, args)
        self._add_instants(pid, [e for e in events
                                 if e.kind in ("retry", "rate_limited", "cache_hit")])
        self._add_counter(pid, "in_flight", requests)
        self._add_counter(pid, "queued", [e for e in waits if e.kind == "queue_wait"])
        self._add_counter(pid, "rate_waiting", [e for e in waits if e.kind == "rate_wait"])

    def _add_requests(self, pid: int, requests: list[Event]) -> None:
        groups: dict[tuple[str, int], list[Event]] = defaultdict(list)
        for event in requests:
            groups[(_origin(event) or "", event.slot)].append(event)
        # Slot tracks first, in slot order; unlimited endpoints (slot -1) get plain lanes.
        for origin, slot in sorted(groups, key=lambda key: (key[1] < 0, key[0], key[1])):
            group = groups[(origin, slot)]
            label = "requests" if slot < 0 else f"slot {slot}"
            if origin:
                label = f"{label} @{origin}"
            lanes = assign_lanes([(e.start, e.end) for e in group])
            # A slot holds one request at a time; extra lanes only appear if the producer broke
            # that promise, and then they keep the trace readable rather than overlapping.
            extra = range(1, max(lanes) + 1)
            if slot < 0:
                names = [f"{label} {n}" for n in range(max(lanes) + 1)]
            else:
                names = [label, *(f"{label} #{n}" for n in extra)]
            tids = [self._thread(pid, name) for name in names]
            for event, lane in zip(group, lanes, strict=True):
                self._span(event, event.node_id or "request", pid, tids[lane], _request_args(event))

    def _add_instants(self, pid: int, instants: list[Event]) -> None:
        if not instants:
            return
        tid = self._thread(pid, "retries & 429s")
        for event in instants:
            # A 429 throttles the whole endpoint (process scope); a retry concerns one call.
            name, scope = {"rate_limited": ("429", "p"), "cache_hit": ("cache hit", "t")
                           }.get(event.kind, ("retry", "t"))
            args = {"node_id": event.node_id, "row": event.row, **_attrs(event)}
            self._emit(
                {
                    "name": name,
                    "cat": event.kind,
                    "ph": "i",
                    "s": scope,
                    "ts": self._us(event.start),
                    "pid": pid,
                    "tid": tid,
                    "args": args,
                }
            )

    def _add_counter(self, pid: int, name: str, spans: list[Event]) -> None:
        if not spans:
            return
        deltas: dict[float, int] = defaultdict(int)
        for event in spans:
            deltas[self._us(event.start)] += 1
            deltas[self._us(event.end)] -= 1
        level = 0
        for ts in sorted(deltas):
            level += deltas[ts]
            # Counter args are plotted as series, so the unique id goes top-level ("eid").
            self.out.append(
                {
                    "name": name,
                    "ph": "C",
                    "ts": ts,
                    "pid": pid,
                    "tid": pid,
                    "eid": self._take_id(),
                    "args": {"requests": level},
                }
            )


def _attrs(event: Event) -> dict[str, Any]:
    return {key: _jsonable(value) for key, value in event.attrs.items()}


def _request_args(event: Event) -> dict[str, Any]:
    attrs = event.attrs
    return {
        "node_id": event.node_id,
        "row": event.row,
        "slot": event.slot,
        "status": attrs.get("status"),
        "input_tokens": attrs.get("input_tokens"),
        "output_tokens": attrs.get("output_tokens"),
        "attempt": attrs.get("attempt"),
        **_attrs(event),
    }
