"""What the loopback server does: latency, limits, faults, auth; plain data.

``ServerConfig`` is the single description of behaviour. The constructor of ``LLMServer``,
``LLMServer.configure``, the ``POST /_control`` endpoint and the CLI all build or update it,
so every way of scripting the server accepts the same names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from plait.errors import ConfigError
from plait.testing._wire import ChatRequest

__all__ = ["Fault", "FaultKind", "Responder", "RetryHint", "ServerConfig"]

FaultKind = Literal[
    "429", "500", "503", "400", "malformed", "empty_choices", "truncated", "hang", "close",
    "bad_usage", "endless", "echo_key", "gzip_bomb",
]
_FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

RetryHint = Literal["both", "seconds", "ms", "none"]
"""How a 429 states its wait: both headers (OpenAI), ``retry-after`` in whole seconds only
(Anthropic), ``retry-after-ms`` only, or no hint at all."""
_RETRY_HINTS: tuple[str, ...] = get_args(RetryHint)

Responder = Callable[[ChatRequest], Any]
"""``fn(request) -> str`` or ``async fn(request) -> str``: the reply text for a request."""


@dataclass(frozen=True)
class Fault:
    """One scripted failure.

    A fault applies to requests that pass its filters (``model``, ``match``). Without
    ``every`` or ``probability`` it fires on the next such request, once (``times=1``);
    with them it fires on every Nth such request, or with that probability (seeded by
    ``ServerConfig.seed``), until it has fired ``times`` times (forever when ``times`` is
    None). When several faults could fire, the first in the list wins, so a list of plain
    faults is a queue consumed in order.

    Args:
        kind: "429", "500", "503", "400", "malformed" (200 with invalid JSON),
            "empty_choices" (200 with no choices / no content blocks), "truncated" (200 whose
            body stops mid-JSON, shorter than its Content-Length), "hang" (no answer for
            ``hang_seconds``, then the connection closes), "close" (connection closed, no
            response), "bad_usage" (a normal 200 reply whose usage token counts are "n/a"),
            "endless" (200 whose chunked body never ends: it stops after ``body_bytes``, when
            the client hangs up, or when the server stops), "echo_key" (401 whose error
            message quotes the request's ``Authorization`` and ``x-api-key`` headers, as a
            careless proxy does), "gzip_bomb" (200 whose small gzip body inflates to
            ``body_bytes``).
        model: Only requests for this model.
        match: Only requests whose last user message contains this text.
        every: Fire on every Nth matching request (N >= 1).
        probability: Fire with this probability per matching request.
        times: How many times to fire; None means once for a plain fault and unlimited with
            ``every`` or ``probability``.
        retry_after: Seconds sent in ``retry-after``/``retry-after-ms`` for a "429" (in
            the form ``ServerConfig.retry_hint`` says).
        hang_seconds: How long a "hang" lasts (bounded; the server's stop ends it early).
        body_bytes: How many bytes an "endless" body sends at most, and a "gzip_bomb"
            inflates to.
        headers: Raw response headers of a "429", sent verbatim instead of the computed
            hint, to script odd or absurd hints (``{"retry-after": "99999"}``, an HTTP
            date, ``"inf"``).

    Example:
        >>> Fault("429", retry_after=2.0)           # the next request gets a 429
        >>> Fault("500", every=10)                  # every 10th request, forever
        >>> Fault("hang", match="slow", times=3)    # the next 3 requests mentioning "slow"
        >>> Fault("429", headers={"retry-after-ms": "1e12"})  # an absurd hint
    """

    kind: FaultKind
    model: str | None = None
    match: str | None = None
    every: int | None = None
    probability: float | None = None
    times: int | None = None
    retry_after: float = 1.0
    hang_seconds: float = 30.0
    headers: dict[str, str] | None = None
    body_bytes: int = 256 * 2**20

    def __post_init__(self) -> None:
        kind = str(self.kind)
        if kind not in _FAULT_KINDS:
            raise ConfigError(f"Fault kind must be one of {list(_FAULT_KINDS)}, got {kind!r}.")
        object.__setattr__(self, "kind", kind)
        if self.every is not None and self.every < 1:
            raise ConfigError(f"Fault every must be >= 1, got {self.every}.")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"Fault probability must be in [0, 1], got {self.probability}.")
        if self.times is not None and self.times < 1:
            raise ConfigError(f"Fault times must be >= 1 or None, got {self.times}.")
        if self.retry_after < 0 or self.hang_seconds < 0:
            raise ConfigError("Fault retry_after and hang_seconds must be >= 0.")
        if self.body_bytes < 1:
            raise ConfigError(f"Fault body_bytes must be >= 1, got {self.body_bytes}.")
        if self.headers is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise ConfigError(f"Fault headers must map str to str, got {self.headers!r}.")

    @property
    def limit(self) -> int | None:
        """How many times this fault may fire (None: unlimited)."""
        if self.times is not None:
            return self.times
        return None if (self.every or self.probability is not None) else 1

    def to_dict(self) -> dict[str, Any]:
        """The fault as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> Fault:
        """Build from ``{"kind": ..., ...}`` or a bare kind such as ``"429"``."""
        if isinstance(data, str):
            return cls(kind=data)  # pyright: ignore[reportArgumentType]
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"Unknown fault key(s) {unknown}. Valid keys: {sorted(valid)}.")
        return cls(**dict(data))


@dataclass
class ServerConfig:
    """Behaviour of the loopback server; every field can change at runtime.

    Args:
        latency: Seconds before each reply: one number for every model, or
            ``{model: seconds}`` with an optional ``"*"`` default.
        latency_jitter: Up to this many extra seconds, uniform, seeded by ``seed``.
        rate_limit: Requests per second. A number caps all requests together; a dict caps
            each listed model separately (``"*"`` in the dict is the all-requests cap).
            Beyond it the server answers 429 with the hint ``retry_hint`` names.
        rate_burst: Token-bucket capacity, in requests. Default: one second's worth
            (``max(1, rate)``), so a burst of ``rate`` requests passes, then ``rate`` per
            second.
        max_concurrency: Requests in flight at once, as a number (all requests) or a dict
            per model (``"*"``: all requests); beyond it the server answers 429.
        busy_retry_after: The retry hint, in seconds, of a 429 caused by ``max_concurrency``.
        retry_hint: How every 429 states its wait: "both" (default, as OpenAI:
            ``retry-after`` in whole seconds rounded up, and exact ``retry-after-ms``),
            "seconds" (as Anthropic: whole-second ``retry-after`` only), "ms"
            (``retry-after-ms`` only) or "none" (no hint).
        faults: Scripted failures, see ``Fault``.
        seed: Seed of jitter and probabilistic faults.
        require_api_key: If set, requests without this key (``Authorization: Bearer`` or
            ``x-api-key``) get 401 in the provider's error format.
        record_requests: How many recent request bodies ``LLMServer.requests`` keeps.
        responder: ``fn(ChatRequest) -> str`` (or async), or a ``"module:function"`` path
            (the only form the CLI and ``spawn`` accept). None: the default echo reply.
    """

    latency: float | dict[str, float] = 0.0
    latency_jitter: float = 0.0
    rate_limit: float | dict[str, float] | None = None
    rate_burst: float | None = None
    max_concurrency: int | dict[str, int] | None = None
    busy_retry_after: float = 0.1
    retry_hint: RetryHint = "both"
    faults: list[Fault] = field(default_factory=list[Fault])
    seed: int = 0
    require_api_key: str | None = None
    record_requests: int = 1000
    responder: Responder | str | None = None

    def __post_init__(self) -> None:
        # Control requests and the CLI hand faults over as dicts or bare kinds.
        given: list[Any] = list(self.faults)
        self.faults = [f if isinstance(f, Fault) else Fault.from_dict(f) for f in given]
        for name in ("latency", "rate_limit", "max_concurrency"):
            value: Any = getattr(self, name)
            values: list[Any] = (
                list(cast("dict[str, Any]", value).values()) if isinstance(value, dict)
                else [value]
            )
            for v in values:
                if v is not None and (isinstance(v, bool) or not v >= 0 or math.isinf(v)):
                    raise ConfigError(f"{name} values must be finite numbers >= 0, got {v!r}.")
        if self.retry_hint not in _RETRY_HINTS:
            raise ConfigError(
                f"retry_hint must be one of {list(_RETRY_HINTS)}, got {self.retry_hint!r}."
            )
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ConfigError(f"rate_burst must be >= 1 request, got {self.rate_burst}.")
        if self.record_requests < 0:
            raise ConfigError(f"record_requests must be >= 0, got {self.record_requests}.")

    def updated(self, changes: Mapping[str, Any]) -> ServerConfig:
        """A copy with ``changes`` applied; unknown names are rejected with the valid ones."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ConfigError(f"Unknown server setting(s) {unknown}. Valid settings: {valid}.")
        return dataclasses.replace(self, **dict(changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (a callable responder shows as its qualified name)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["faults"] = [f.to_dict() for f in self.faults]
        data["require_api_key"] = None if self.require_api_key is None else "***"
        if callable(self.responder):
            data["responder"] = getattr(self.responder, "__qualname__", repr(self.responder))
        return data
