"""One endpoint's call path: permit, client call, validation, retries, stats and events.

Retry policy, decided from error data (``retryable``, ``status``, ``retry_after``):

* **429** (``RateLimitError``): tell the permit source (``on_rate_limited``), which pauses
  every acquisition (learning how long from the hint and the pattern of refusals) and
  lowers the rate; then retry through the permit source, so the pause and the lowered rate
  pace the retry. 429s do not spend ``max_retries``: under a storm every request may see
  several, and failing rows because the provider asked us to slow down is wrong. They have
  their own, larger budget: ``rate_limit_retries`` attempts (default 100) and the
  endpoint's ``rate_limit_patience`` seconds (default 600) since the call's first 429,
  whichever ends first. A pause that would end after the patience fails the call at once,
  with the wait and the patience in the message: a row error, never a hang.
* **Server-supplied waits are capped** at the endpoint's ``max_retry_wait`` (default 300 s),
  for 429s and other retryable errors alike: one absurd hint (``Retry-After: 99999``, a date
  next year, ``inf``) would otherwise stall the endpoint for that long, silently. A capped
  hint is reported as a "warning" event and logged on the ``plait`` logger.
* **A request larger than ``tokens_per_minute``** (estimated) can never fit a minute's
  budget and would stall the endpoint for minutes of token debt: it fails at once with
  ``BadRequestError`` naming its size and the limit.
* **5xx, connection, timeout, malformed reply, failed validation**: up to ``max_retries``
  retries with capped exponential backoff and full jitter (``uniform(0, min(20, 0.5 *
  2**n))`` seconds), or exactly ``retry_after`` when the server gave one.
* **Other 4xx** (``BadRequestError``): raised at once.

Events are built only when a sink is attached, so the default path pays nothing for them.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import TypeVar, overload

from plait.clients.base import LLMClient, LLMRequest, LLMResponse
from plait.errors import BadRequestError, LLMError, RateLimitError, ResponseFormatError
from plait.events import Event, EventKind, EventSink
from plait.pricing._cost import endpoint_price
from plait.resources.clock import Clock, MonotonicClock
from plait.resources.config import EndpointConfig
from plait.resources.permits import Permit, PermitSource
from plait.resources.stats import CALL_STATS, EndpointStats

__all__ = ["EndpointPool", "backoff_delay", "estimate_tokens"]

T = TypeVar("T")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0

_log = logging.getLogger("plait")


def backoff_delay(retry: int, rng: random.Random, *, base: float = BACKOFF_BASE,
                  cap: float = BACKOFF_CAP) -> float:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base * 2**retry))``."""
    return rng.uniform(0.0, min(cap, base * (2.0 ** min(retry, 32))))


def estimate_tokens(request: LLMRequest) -> int:
    """Tokens to reserve before a call: ~4 characters per input token plus the output cap."""
    chars = len(request.system_prompt) + len(request.prompt)
    return chars // 4 + (request.max_tokens or 256)


class EndpointPool:
    """Makes calls to one endpoint within its limits, retrying what can be retried.

    Args:
        alias: The endpoint alias.
        config: The endpoint's configuration (timeout, max_retries, costs).
        client: The wire client.
        permits: The owner (or lessee) of the endpoint's limits.
        clock: Time source for backoff sleeps and latencies.
        events: Event sink, or None for no events.
        rng: Randomness for backoff jitter (seed it in tests).
        rate_limit_retries: Most 429 retries of one call.
        rate_limit_patience: Seconds after a call's first 429 after which it stops retrying
            429s; None takes the endpoint's ``rate_limit_patience``.
    """

    def __init__(
        self,
        alias: str,
        config: EndpointConfig,
        *,
        client: LLMClient,
        permits: PermitSource,
        clock: Clock | None = None,
        events: EventSink | None = None,
        rng: random.Random | None = None,
        rate_limit_retries: int = 100,
        rate_limit_patience: float | None = None,
    ) -> None:
        self.alias = alias
        self.config = config
        self.client = client
        self.permits = permits
        # Built-in table prices unless the endpoint sets its own (plait.pricing).
        price = endpoint_price(config)
        # An endpoint sending through the provider's batch API pays its batch prices.
        batched = bool(getattr(config, "batch", False))
        self._prices = ((price.batch_input, price.batch_output) if batched
                        else (price.input, price.output))
        self.stats = EndpointStats(*self._prices)
        self._clock: Clock = clock or MonotonicClock()
        self._events = events
        self._rng = rng or random.Random()
        self._rate_limit_retries = rate_limit_retries
        # Local-model configs (plait.local_models) carry no retry-wait settings: defaults.
        self._rate_limit_patience: float = (
            getattr(config, "rate_limit_patience", 600.0) if rate_limit_patience is None
            else rate_limit_patience)
        self._max_retry_wait: float = getattr(config, "max_retry_wait", 300.0)

    @overload
    async def call(
        self, request: LLMRequest, *, node_id: str | None = None, row: int | None = None,
        validate: None = None,
    ) -> tuple[LLMResponse, None]: ...

    @overload
    async def call(
        self, request: LLMRequest, *, node_id: str | None = None, row: int | None = None,
        validate: Callable[[LLMResponse], T],
    ) -> tuple[LLMResponse, T]: ...

    async def call(
        self,
        request: LLMRequest,
        *,
        node_id: str | None = None,
        row: int | None = None,
        validate: Callable[[LLMResponse], T] | None = None,
    ) -> tuple[LLMResponse, T | None]:
        """Call the endpoint until a response passes ``validate`` or the budget is spent.

        Args:
            request: The request.
            node_id: Graph node id, for events.
            row: Row index, for events.
            validate: Parses/validates the response; any exception it raises (a pydantic
                ``ValidationError``, ``ValueError``...) counts as a retryable
                ``ResponseFormatError``.

        Returns:
            The response and ``validate``'s result (None without ``validate``).

        Raises:
            LLMError: The last error, with ``alias`` set, when it is not retryable or the
                retry budget is spent.
        """
        tokens = estimate_tokens(request)
        stats = self._stats_for_call()
        tpm = self.config.tokens_per_minute
        if tpm is not None and tokens > tpm:
            raise self._give_up(self._too_large(request, tokens, tpm), 1, "", stats)
        retries = limited = 0
        first_429: float | None = None
        while True:
            permit = await self.permits.acquire(tokens)
            if self._events is not None:
                self._emit_waits(permit, node_id, row)
            outcome = await self._attempt(request, permit, node_id, row, validate, stats)
            if not isinstance(outcome, LLMError):
                return outcome
            error = outcome
            now = self._clock.now()
            if error.alias is None:
                error.alias = self.alias
            attempts = retries + limited + 1
            if not error.retryable:
                raise self._give_up(error, attempts, "it is not retryable", stats)
            hint = self._capped_hint(error, node_id, row)
            if isinstance(error, RateLimitError):
                pause = self.permits.on_rate_limited(hint)
                pause = (hint or 0.0) if pause is None else pause
                self._instant("rate_limited", node_id, row, retry_after=error.retry_after,
                              pause=pause)
                first_429 = now if first_429 is None else first_429
                limited += 1
                patience = self._rate_limit_patience
                if (limited > self._rate_limit_retries
                        or now - first_429 > patience):
                    raise self._give_up(error, attempts, "the 429 budget is spent", stats)
                capped = hint is not None and hint != error.retry_after
                if now + max(pause, hint if capped and hint else 0.0) > first_429 + patience:
                    # The wait outlasts the caller's patience: fail now, not after it.
                    wait = (f"the server asked to wait {error.retry_after:g}s (capped to "
                            f"max_retry_wait={hint:g}s)" if capped
                            else f"the endpoint is paused {pause:g}s")
                    raise self._give_up(error, attempts, (
                        f"{wait}, past rate_limit_patience={patience:g}s for this call; "
                        "raise rate_limit_patience in the EndpointConfig to wait longer"),
                        stats)
                delay = 0.0  # the permit source paces the retry
            else:
                if retries >= self.config.max_retries:
                    raise self._give_up(error, attempts, f"max_retries={self.config.max_retries}",
                                        stats)
                delay = hint if hint is not None else backoff_delay(retries, self._rng)
                retries += 1
            for s in stats:
                s.retries += 1
            self._instant("retry", node_id, row, status=error.status, delay=delay,
                          error=type(error).__name__)
            if delay > 0:
                await self._clock.sleep(delay)

    async def _attempt(
        self,
        request: LLMRequest,
        permit: Permit,
        node_id: str | None,
        row: int | None,
        validate: Callable[[LLMResponse], T] | None,
        stats: tuple[EndpointStats, ...],
    ) -> tuple[LLMResponse, T | None] | LLMError:
        clock = self._clock
        for s in stats:
            s.requests += 1
        start = clock.now()
        try:
            response = await self.client.complete(request, timeout=self.config.timeout)
        except LLMError as exc:
            self.permits.release(permit, used_tokens=None)
            for s in stats:
                s.record_error(exc, exc.status)
            self._span("request", start, clock.now(), permit, node_id, row, status=exc.status,
                       error=type(exc).__name__)
            return exc
        except BaseException:
            self.permits.release(permit, used_tokens=None)
            raise
        end = clock.now()
        usage = response.usage
        used = usage.input_tokens + usage.output_tokens
        self.permits.release(permit, used_tokens=used or None)
        self._span("request", start, end, permit, node_id, row, status=200,
                   input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        parsed: T | None = None
        if validate is not None:
            try:
                parsed = validate(response)
            except LLMError as exc:
                for s in stats:
                    s.record_error(exc, exc.status)
                return exc
            except Exception as exc:
                err = ResponseFormatError(
                    f"Endpoint '{self.alias}' replied, but the reply failed validation: "
                    f"{type(exc).__name__}: {exc}", status=200, alias=self.alias,
                    body=response.text[:500],
                )
                err.__cause__ = exc
                for s in stats:
                    s.record_error(err, 200)
                return err
        for s in stats:
            s.record_success(end - start, usage.input_tokens, usage.output_tokens, usage.known)
        self.permits.on_success()
        return response, parsed

    def _capped_hint(self, error: LLMError, node_id: str | None, row: int | None
                     ) -> float | None:
        """The server's retry hint, capped at ``max_retry_wait`` (with a warning if it was)."""
        hint = error.retry_after
        cap = self._max_retry_wait
        if hint is None or (math.isfinite(hint) and hint <= cap):
            return hint
        message = (f"Endpoint '{self.alias}' asked to wait {hint:g}s before retrying; waiting "
                   f"max_retry_wait={cap:g}s instead (set max_retry_wait in the "
                   "EndpointConfig to change the cap).")
        _log.warning(message)
        self._instant("warning", node_id, row, message=message, retry_after=hint, capped_to=cap)
        return cap

    def _too_large(self, request: LLMRequest, tokens: int, tpm: float) -> BadRequestError:
        chars = len(request.system_prompt) + len(request.prompt)
        return BadRequestError(
            f"Endpoint '{self.alias}': this request needs about {tokens:,} tokens (a prompt of "
            f"{chars:,} characters, ~{chars // 4:,} tokens, plus max_tokens="
            f"{request.max_tokens or 256}), more than tokens_per_minute={tpm:g}: it can never "
            "fit in a minute's budget. Shorten the prompt, lower max_tokens, or raise "
            "tokens_per_minute in the EndpointConfig.", alias=self.alias,
        )

    def _stats_for_call(self) -> tuple[EndpointStats, ...]:
        calls = CALL_STATS.get()
        if calls is None:
            return (self.stats,)
        mine = calls.get(self.alias)
        if mine is None:
            mine = calls[self.alias] = EndpointStats(*self._prices)
        return (self.stats, mine)

    def _give_up(self, error: LLMError, attempts: int, why: str,
                 stats: tuple[EndpointStats, ...]) -> LLMError:
        for s in stats:
            s.failures += 1
        if attempts == 1 and not error.retryable:
            return error
        final = type(error)(
            f"{error} (gave up after {attempts} attempts: {why})", status=error.status,
            retry_after=error.retry_after, retryable=error.retryable, alias=self.alias,
            body=error.body,
        )
        final.__cause__ = error.__cause__ or error
        return final

    def _emit_waits(self, permit: Permit, node_id: str | None, row: int | None) -> None:
        now = self._clock.now()
        if permit.rate_wait > 0:
            self._span("rate_wait", now - permit.rate_wait, now, permit, node_id, row)
        if permit.queue_wait > 0:
            start = now - permit.rate_wait - permit.queue_wait
            self._span("queue_wait", start, start + permit.queue_wait, permit, node_id, row)

    def _span(self, kind: EventKind, start: float, end: float, permit: Permit,
              node_id: str | None, row: int | None, **attrs: object) -> None:
        if self._events is not None:
            self._events(Event(kind, start, end, self.alias, node_id, row, permit.slot,
                               dict(attrs)))

    def _instant(self, kind: EventKind, node_id: str | None, row: int | None,
                 **attrs: object) -> None:
        if self._events is not None:
            now = self._clock.now()
            self._events(Event(kind, now, now, self.alias, node_id, row, -1, dict(attrs)))
