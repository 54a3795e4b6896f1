"""Chrome trace output: structure per phase, lanes, counters, ids, multi-process merges."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from plait.events import Event
from plait.profiling import TraceProfiler, assign_lanes, chrome_trace

REQUIRED = {
    "M": {"name", "ph", "pid", "tid", "args"},
    "X": {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"},
    "i": {"name", "ph", "ts", "pid", "tid", "s", "args"},
    "C": {"name", "ph", "ts", "pid", "args", "eid"},
}


def request(
    start: float,
    end: float,
    slot: int,
    *,
    alias: str = "fast",
    row: int = 0,
    node: str = "judge",
    **attrs: Any,
) -> Event:
    base = {"status": 200, "input_tokens": 10, "output_tokens": 5, "attempt": 1}
    return Event("request", start, end, alias, node, row, slot, {**base, **attrs})


def sample_stream() -> list[Event]:
    return [
        Event("row", 10.0, 12.0, row=0),
        Event("row", 10.5, 11.5, row=1),  # overlaps row 0: needs a second lane
        Event("row", 12.0, 12.5, row=2),  # touches row 0's end: may reuse lane 0
        Event("ready", 10.0, 10.0, "fast", "judge", 0),
        Event("node", 10.0, 11.0, "fast", "judge", 0, attrs={"kind": "llm", "ok": True}),
        Event("node", 10.5, 11.4, None, "fmt", 1, attrs={"kind": "format", "ok": True}),
        Event("queue_wait", 10.0, 10.2, "fast", "judge", 0),
        Event("queue_wait", 10.1, 10.3, "fast", "judge", 1),
        Event("rate_wait", 10.2, 10.25, "fast", "judge", 0),
        request(10.25, 10.6, 0, row=0, status=429),
        Event("rate_limited", 10.6, 10.6, "fast", "judge", 0, attrs={"retry_after": 0.1}),
        Event(
            "retry",
            10.6,
            10.6,
            "fast",
            "judge",
            0,
            attrs={"status": 429, "delay": 0.1, "error": ValueError("boom")},
        ),
        request(10.3, 10.9, 1, row=1),
        request(10.7, 11.0, 0, row=0, attempt=2),
        request(10.0, 10.4, -1, alias="slow", row=2, node="sum"),
        request(10.1, 10.5, -1, alias="slow", row=3, node="sum"),
    ]


def validate(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Structural checks any trace must pass; returns the events."""
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    json.dumps(trace)  # JSON-able
    ids: list[int] = []
    for ev in events:
        assert REQUIRED[ev["ph"]] <= ev.keys(), ev
        ids.append(ev["eid"] if ev["ph"] == "C" else ev["args"]["id"])
        if ev["ph"] == "i":
            assert ev["s"] in ("t", "p", "g")
        if ev["ph"] == "X":
            assert ev["dur"] >= 0 and ev["ts"] >= 0
        if ev["ph"] == "C":
            assert all(isinstance(v, int) for v in ev["args"].values())
    assert len(ids) == len(set(ids)), "ids must be unique across the batch"

    named_threads = {
        (e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"
    }
    tids = [tid for _, tid in named_threads]
    assert len(tids) == len(set(tids)), "tids are unique across processes"
    named_pids = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}

    by_track: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for ev in events:
        assert ev["pid"] in named_pids
        if ev["ph"] in ("X", "i"):
            assert (ev["pid"], ev["tid"]) in named_threads
        if ev["ph"] == "X":
            by_track[(ev["pid"], ev["tid"])].append((ev["ts"], ev["ts"] + ev["dur"]))
    for spans in by_track.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start + 1e-6, "X events on one track must not overlap"

    counters: dict[tuple[int, str], list[tuple[float, int]]] = defaultdict(list)
    for ev in events:
        if ev["ph"] == "C":
            counters[(ev["pid"], ev["name"])].append((ev["ts"], ev["args"]["requests"]))
    for series in counters.values():
        times = [t for t, _ in series]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert all(v >= 0 for _, v in series)
        assert series[-1][1] == 0
    return events


def names(events: list[dict[str, Any]], kind: str) -> dict[int, str]:
    return {
        e["pid"] if kind == "process_name" else e["tid"]: e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == kind
    }


def test_layout_of_sample_stream() -> None:
    events = validate(chrome_trace(sample_stream()))
    processes = names(events, "process_name")
    assert sorted(processes.values()) == ["endpoint fast", "endpoint slow", "pipeline"]
    threads = names(events, "thread_name")
    fast_pid = next(p for p, n in processes.items() if n == "endpoint fast")
    fast_threads = {threads[e["tid"]] for e in events if e["pid"] == fast_pid and e["ph"] in "Xi"}
    assert {"slot 0", "slot 1", "waits 0", "waits 1", "retries & 429s"} <= fast_threads

    rows = [e for e in events if e["ph"] == "X" and e["cat"] == "row"]
    assert len({e["tid"] for e in rows}) == 2  # three rows, at most two overlapping

    reqs = [e for e in events if e["ph"] == "X" and e["cat"] == "request"]
    first = min(reqs, key=lambda e: e["ts"])
    assert first["ts"] == 0.0 and first["dur"] == 400000.0  # µs relative to the first event
    retried = next(e for e in reqs if e["args"]["attempt"] == 2)
    assert retried["name"] == "judge" and threads[retried["tid"]] == "slot 0"
    assert retried["args"]["row"] == 0 and retried["args"]["input_tokens"] == 10

    instants = {e["name"]: e for e in events if e["ph"] == "i"}
    assert instants["429"]["s"] == "p" and instants["retry"]["s"] == "t"
    assert instants["retry"]["args"]["error"] == "boom"  # non-JSON attrs become strings


def test_counters_follow_the_spans() -> None:
    events = validate(chrome_trace(sample_stream()))
    fast_pid = next(p for p, n in names(events, "process_name").items() if n == "endpoint fast")
    in_flight = [
        (e["ts"], e["args"]["requests"])
        for e in events
        if e["ph"] == "C" and e["pid"] == fast_pid and e["name"] == "in_flight"
    ]
    reqs = [
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e["ph"] == "X" and e["pid"] == fast_pid and e["cat"] == "request"
    ]
    for ts, value in in_flight:
        assert value == sum(1 for s, end in reqs if s <= ts < end)
    assert max(v for _, v in in_flight) == 2
    queued = [e for e in events if e["ph"] == "C" and e["name"] == "queued"]
    assert max(e["args"]["requests"] for e in queued) == 2


def test_workers_with_the_same_slot_get_distinct_tracks() -> None:
    stream = [
        Event("request", 0.0, 1.0, "fast", "a", 0, 0, {"worker": "w1"}),
        Event("request", 0.5, 1.5, "fast", "a", 1, 0, {"worker": "w2"}),
        Event("request", 0.2, 0.4, "fast", "a", 2, 0, {"pid": 4242}),
    ]
    events = validate(chrome_trace(stream))
    threads = names(events, "thread_name")
    assert {threads[e["tid"]] for e in events if e["ph"] == "X"} == {
        "slot 0 @w1",
        "slot 0 @w2",
        "slot 0 @4242",
    }


def test_overlapping_requests_on_one_slot_spill_into_extra_lanes() -> None:
    stream = [request(0.0, 1.0, 0), request(0.5, 1.5, 0, row=1)]
    events = validate(chrome_trace(stream))
    threads = names(events, "thread_name")
    assert sorted(threads[e["tid"]] for e in events if e["ph"] == "X") == ["slot 0", "slot 0 #1"]


def test_many_overlapping_waits_need_as_many_lanes() -> None:
    stream = [Event("queue_wait", 0.1 * i, 5.0, "fast", "n", i) for i in range(5)]
    events = validate(chrome_trace(stream))
    assert len({e["tid"] for e in events if e["ph"] == "X"}) == 5


def test_empty_stream_is_a_valid_trace() -> None:
    assert validate(chrome_trace([])) == []


def test_assign_lanes_uses_fewest_lanes() -> None:
    spans = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (0.5, 0.6), (1.5, 1.8)]
    lanes = assign_lanes(spans)
    assert max(lanes) + 1 == 3  # at most three spans overlap (around t=1.6)
    for lane in set(lanes):
        mine = sorted(s for s, n in zip(spans, lanes, strict=True) if n == lane)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine))
    assert lanes[0] == lanes[2]  # (2, 4) reuses the lane (0, 2) freed


def test_profiler_is_a_sink_and_writes_json(tmp_path: Path) -> None:
    profiler = TraceProfiler()
    for event in sample_stream():
        profiler(event)
    profiler.extend([request(20.0, 21.0, 0, alias="fast", row=9)])
    path = profiler.write(tmp_path / "trace.json")
    validate(json.loads(path.read_text()))
    gz = profiler.write(tmp_path / "trace.json.gz")
    assert json.loads(gzip.decompress(gz.read_bytes())) == json.loads(path.read_text())
