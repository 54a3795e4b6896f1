"""One stream of execution events feeding the trace, the summary, progress and metrics.

Emitting is free when nobody listens: producers check ``sink is not None`` before building an
event, so plait's hot path pays nothing unless profiling or metrics are on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind", "EventSink"]

EventKind = Literal[
    "request",  # one HTTP attempt: start = request sent, end = response read
    "queue_wait",  # waiting for a concurrency slot of an endpoint
    "rate_wait",  # waiting for the rate limiter (requests or tokens)
    "retry",  # instant: an attempt failed and will be retried (attrs: status, delay)
    "rate_limited",  # instant: a 429 arrived (attrs: retry_after, pause)
    "warning",  # instant: something went odd but the run goes on (attrs: message, ...)
    "node",  # a whole graph node, first attempt to result (attrs: kind)
    "row",  # a whole row, first node to output
    "ready",  # instant: a node became ready to run (for bubble detection)
    "cache_hit",  # instant: an LLM call answered from the response cache (no request)
]


@dataclass(slots=True)
class Event:
    """One span (start < end) or instant (start == end), times from ``time.perf_counter()``.

    Attributes:
        kind: What happened.
        start: Span start, seconds (perf_counter clock).
        end: Span end; equals ``start`` for instants.
        alias: Endpoint alias, if the event concerns an endpoint.
        node_id: Graph node id, if any.
        row: Row index in the batch, if any.
        slot: Concurrency slot (one Perfetto track per slot), -1 if none.
        attrs: Extra data (status, tokens, delay...). Never API keys or headers.
    """

    kind: EventKind
    start: float
    end: float
    alias: str | None = None
    node_id: str | None = None
    row: int | None = None
    slot: int = -1
    attrs: dict[str, Any] = field(default_factory=dict[str, Any])


EventSink = Callable[[Event], None]
