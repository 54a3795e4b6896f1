"""What the loopback server has seen, for assertions in tests and benchmarks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServerStats", "StatsCounter"]


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of the server's counters since start (or the last ``reset_stats``).

    Attributes:
        total_requests: Chat requests received (including those answered with an error).
        requests_by_model: The same, per model.
        in_flight: Requests being handled right now.
        max_in_flight: The most requests in flight at once.
        in_flight_by_model: ``in_flight`` per model.
        max_in_flight_by_model: ``max_in_flight`` per model.
        responses_ok: Successful replies (200-shaped faults such as "malformed" excluded).
        rate_limited: 429 replies (rate cap, concurrency cap or fault).
        server_errors: 5xx replies.
        client_errors: 4xx replies other than 429 (bad request, auth).
        faults_injected: Scripted faults applied.
        faults_by_kind: The same, per fault kind.
        prompt_tokens: Input tokens of successful replies.
        completion_tokens: Output tokens of successful replies.
    """

    total_requests: int = 0
    requests_by_model: dict[str, int] = field(default_factory=dict[str, int])
    in_flight: int = 0
    max_in_flight: int = 0
    in_flight_by_model: dict[str, int] = field(default_factory=dict[str, int])
    max_in_flight_by_model: dict[str, int] = field(default_factory=dict[str, int])
    responses_ok: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    client_errors: int = 0
    faults_injected: int = 0
    faults_by_kind: dict[str, int] = field(default_factory=dict[str, int])
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters (with ``total_tokens``)."""
        return dataclasses.asdict(self) | {"total_tokens": self.total_tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerStats:
        """Rebuild from ``to_dict`` output (extra keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class StatsCounter:
    """The mutable counters behind ``ServerStats``; touched only on the server's loop."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter except what is in flight right now."""
        in_flight = getattr(self, "in_flight", 0)
        in_flight_by_model: dict[str, int] = getattr(self, "in_flight_by_model", {})
        self.total_requests = 0
        self.requests_by_model: dict[str, int] = {}
        self.in_flight = in_flight
        self.max_in_flight = in_flight
        self.in_flight_by_model = in_flight_by_model
        self.max_in_flight_by_model = dict(in_flight_by_model)
        self.status: dict[int, int] = {}
        self.faults_by_kind: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def received(self, model: str) -> None:
        """Count one request for ``model``."""
        self.total_requests += 1
        self.requests_by_model[model] = self.requests_by_model.get(model, 0) + 1

    def enter(self, model: str) -> None:
        """A request starts being served."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        n = self.in_flight_by_model.get(model, 0) + 1
        self.in_flight_by_model[model] = n
        if n > self.max_in_flight_by_model.get(model, 0):
            self.max_in_flight_by_model[model] = n

    def leave(self, model: str) -> None:
        """A request is done being served."""
        self.in_flight -= 1
        self.in_flight_by_model[model] -= 1

    def responded(self, status: int) -> None:
        """Count one reply with HTTP ``status``."""
        self.status[status] = self.status.get(status, 0) + 1

    def fault(self, kind: str) -> None:
        """Count one injected fault."""
        self.faults_by_kind[kind] = self.faults_by_kind.get(kind, 0) + 1

    def snapshot(self) -> ServerStats:
        """The counters as an immutable ``ServerStats``."""
        status = self.status
        return ServerStats(
            total_requests=self.total_requests,
            requests_by_model=dict(self.requests_by_model),
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            in_flight_by_model={k: v for k, v in self.in_flight_by_model.items() if v},
            max_in_flight_by_model=dict(self.max_in_flight_by_model),
            responses_ok=status.get(200, 0),
            rate_limited=status.get(429, 0),
            server_errors=sum(n for s, n in status.items() if s >= 500),
            client_errors=sum(n for s, n in status.items() if 400 <= s < 500 and s != 429),
            faults_injected=sum(self.faults_by_kind.values()),
            faults_by_kind=dict(self.faults_by_kind),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )
