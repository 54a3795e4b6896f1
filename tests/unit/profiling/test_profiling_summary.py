"""Run summary: counts, latency, utilisation and bubble detection on hand-built streams."""

from __future__ import annotations

import json

import pytest

from plait.events import Event
from plait.profiling import find_bubbles, summarize


def ready(t: float, node: str = "judge", row: int = 0, alias: str = "fast") -> Event:
    return Event("ready", t, t, alias, node, row)


def req(
    start: float,
    end: float,
    *,
    node: str = "judge",
    row: int = 0,
    slot: int = 0,
    alias: str = "fast",
    **attrs: object,
) -> Event:
    return Event("request", start, end, alias, node, row, slot, dict(attrs))


def test_known_bubble_is_found() -> None:
    events = [ready(1.0), req(1.5, 2.0)]
    bubbles = find_bubbles(events, max_concurrent=2)
    assert len(bubbles) == 1
    assert bubbles[0].start == 1.0
    assert bubbles[0].duration == pytest.approx(0.5)
    assert bubbles[0].node_ids == ("judge",)


def test_no_bubble_while_all_slots_busy() -> None:
    events = [ready(1.0), req(0.9, 1.6, row=1, slot=0), req(0.9, 1.6, row=2, slot=1), req(1.6, 2.0)]
    assert find_bubbles(events, max_concurrent=2) == []


def test_bubble_while_some_slots_free() -> None:
    events = [ready(1.0), req(0.9, 1.6, row=1, slot=0), req(1.5, 2.0, slot=1)]
    [bubble] = find_bubbles(events, max_concurrent=2)
    assert (bubble.start, bubble.duration) == (1.0, pytest.approx(0.5))


def test_no_bubble_while_rate_waiting() -> None:
    events = [ready(1.0), Event("rate_wait", 1.0, 1.5, "fast", "judge", 0), req(1.5, 2.0)]
    assert find_bubbles(events, max_concurrent=2) == []


def test_partial_rate_wait_leaves_the_rest_as_bubble() -> None:
    events = [ready(1.0), Event("rate_wait", 1.0, 1.2, "fast", "judge", 0), req(1.5, 2.0)]
    [bubble] = find_bubbles(events, max_concurrent=2)
    assert bubble.start == 1.2 and bubble.duration == pytest.approx(0.3)


def test_no_bubble_during_a_429_pause() -> None:
    pause = Event("rate_limited", 1.0, 1.0, "fast", attrs={"retry_after": 0.5})
    assert find_bubbles([ready(1.0), pause, req(1.5, 2.0)], max_concurrent=2) == []


def test_unlimited_endpoint_is_never_saturated() -> None:
    events = [ready(1.0), req(0.0, 3.0, row=1, slot=-1), req(1.5, 2.0, slot=-1)]
    [bubble] = find_bubbles(events, max_concurrent=None)
    assert bubble.duration == pytest.approx(0.5)


def test_short_gaps_are_noise() -> None:
    events = [ready(1.0), req(1.0005, 2.0)]
    assert find_bubbles(events, max_concurrent=2) == []
    assert len(find_bubbles(events, max_concurrent=2, min_bubble=0.0001)) == 1


def test_touching_gaps_merge_and_collect_nodes() -> None:
    events = [
        ready(1.0, "a"),
        req(1.3, 2.0, node="a"),
        ready(1.2, "b", row=1),
        req(1.6, 2.0, node="b", row=1, slot=1),
    ]
    # With one slot, "a" occupies it from 1.3 on, so only [1.0, 1.3) is a bubble.
    [bubble] = find_bubbles(events, max_concurrent=1)
    assert bubble.duration == pytest.approx(0.3) and bubble.node_ids == ("a", "b")
    # With two slots the endpoint stays under its limit until "b" starts: one gap, 0.6 s.
    [bubble] = find_bubbles(events, max_concurrent=2)
    assert bubble.duration == pytest.approx(0.6) and bubble.node_ids == ("a", "b")


def test_ready_matches_the_first_attempt_of_its_own_row() -> None:
    events = [ready(1.0, row=0), req(1.1, 1.2, row=0), req(1.8, 1.9, row=0), req(0.0, 0.5, row=1)]
    [bubble] = find_bubbles(events, max_concurrent=4)
    assert bubble.duration == pytest.approx(0.1)


def test_node_without_request_is_no_demand() -> None:
    assert find_bubbles([ready(1.0), req(0.0, 0.5, row=7)], max_concurrent=2) == []


def stream_for_summary() -> list[Event]:
    events = [Event("row", 0.0, 10.0, row=r) for r in range(3)]
    events.append(Event("node", 0.0, 10.0, "fast", "judge", 2, attrs={"ok": False}))
    # 100 requests, latencies 0.01..1.00 s, alternating slots, all inside [0, 10).
    for i in range(100):
        start = i * 0.1
        events.append(
            req(
                start,
                start + (i + 1) * 0.01,
                row=i,
                slot=i % 2,
                status=200,
                input_tokens=10,
                output_tokens=2,
            )
        )
    events.append(req(9.0, 9.5, row=200, slot=0, status=429, input_tokens=None))
    events.append(Event("retry", 9.5, 9.5, "fast", "judge", 200, attrs={"status": 429}))
    events.append(Event("rate_limited", 9.5, 9.5, "fast", attrs={"retry_after": None}))
    # Every request has ended by 10.9 s; this one waited 50 ms with both slots free.
    events.append(ready(11.0, row=300))
    events.append(req(11.05, 11.06, row=300))
    return events


def test_summary_counts_latency_and_utilisation() -> None:
    events = stream_for_summary()
    summary = summarize(
        events,
        max_concurrent={"fast": 2, "idle": 4},
        wall_time=12.0,
        endpoint_stats={
            "fast": {"input_cost_per_1m": 1.0, "output_cost_per_1m": 2.0},
            "idle": {"cost": 0.5},
        },
    )
    fast = summary.endpoints["fast"]
    assert (fast.requests, fast.errors, fast.retries, fast.rate_limited) == (102, 1, 1, 1)
    assert (fast.input_tokens, fast.output_tokens) == (1000, 200)
    assert fast.cost == pytest.approx((1000 * 1.0 + 200 * 2.0) / 1e6)
    p50, p95, p99 = fast.latency_p50, fast.latency_p95, fast.latency_p99
    assert p50 is not None and p95 is not None and p99 is not None
    assert p50 == pytest.approx(0.5)
    assert p99 > p95 > p50
    busy = [(e.start, e.end) for e in events if e.kind == "request"]
    slot_seconds = sum(end - start for start, end in busy)
    assert fast.slot_utilisation == pytest.approx(slot_seconds / 24.0)
    assert fast.utilisation is not None and fast.utilisation < slot_seconds / 12.0
    assert 0.0 < fast.utilisation <= 1.0
    assert fast.bubble_count == 1 and fast.bubble_seconds == pytest.approx(0.05)
    idle = summary.endpoints["idle"]
    assert idle.requests == 0 and idle.cost == 0.5 and idle.latency_p50 is None
    assert idle.utilisation == 0.0
    assert (summary.rows, summary.failed_nodes) == (3, 1)


def test_utilisation_is_the_union_of_busy_time() -> None:
    events = [req(0.0, 2.0, slot=0), req(1.0, 3.0, slot=1), req(5.0, 6.0, slot=0)]
    fast = summarize(events, max_concurrent={"fast": 2}, wall_time=10.0).endpoints["fast"]
    assert fast.busy_seconds == pytest.approx(4.0)
    assert fast.utilisation == pytest.approx(0.4)
    assert fast.slot_utilisation == pytest.approx(5.0 / 20.0)


def test_top_bubbles_are_the_five_longest() -> None:
    events: list[Event] = []
    for i in range(7):
        t = 10.0 * i
        events += [ready(t, row=i), req(t + 0.1 * (i + 1), t + 1.0, row=i)]
    fast = summarize(events, max_concurrent={"fast": 1}, wall_time=70.0).endpoints["fast"]
    assert fast.bubble_count == 7
    assert [round(b.duration, 6) for b in fast.top_bubbles] == [0.7, 0.6, 0.5, 0.4, 0.3]


def test_unlimited_and_zero_wall_time_give_none() -> None:
    fast = summarize(
        [req(0.0, 1.0, slot=-1)], max_concurrent={"fast": None}, wall_time=0.0
    ).endpoints["fast"]
    assert fast.slot_utilisation is None and fast.utilisation is None and fast.cost is None


def test_to_dict_is_json_and_str_is_a_table() -> None:
    summary = summarize(stream_for_summary(), max_concurrent={"fast": 2}, wall_time=12.0)
    data = json.loads(json.dumps(summary.to_dict()))
    fast = data["endpoints"]["fast"]
    assert fast["requests"] == 102
    assert fast["top_bubbles"][0]["offset"] == pytest.approx(11.0)
    assert fast["top_bubbles"][0]["node_ids"] == ["judge"]
    text = str(summary)
    assert text.splitlines()[1].split()[:3] == ["alias", "reqs", "err"]
    assert "fast" in text and "bubble at +11.000s" in text
