"""``BatchClient``: an ``LLMClient`` whose calls go through the provider's batch API.

The endpoint pool calls ``complete(request)`` exactly as for a synchronous client (so
validation, retries and statistics are the pool's); here the call joins the endpoint's open
collection. The collection is submitted as one batch when it reaches the provider's limits
(requests or bytes per batch), when no call has joined for ``linger`` seconds, or
``max_linger`` seconds after its first call. Rows run pipelined, so the ready calls of one
graph level across all rows in flight arrive together and travel in one batch. Each waiting
call then gets its own item's result (or error) when the batch ends.

Before a submission returns, the batch id and its items are in the journal
(:mod:`plait.batch_api._journal`); a re-run's identical call claims the journaled item and
waits for that batch instead of paying again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from plait.batch_api._journal import BatchJournal, request_hash
from plait.batch_api._policy import BatchPolicy
from plait.batch_api._providers import BatchAPI, batch_api_for
from plait.batch_api._tracker import BatchTracker
from plait.clients.base import LLMRequest, LLMResponse
from plait.errors import BadRequestError, LLMError, ServerError
from plait.resources.clock import Clock, MonotonicClock
from plait.resources.config import EndpointConfig

__all__ = ["BatchClient"]


@dataclass(slots=True)
class _Pending:
    item: str
    line: bytes
    submitted: asyncio.Future[str]  # resolves to the batch id once journaled


class BatchClient:
    """Sends an endpoint's calls through its provider's batch API (half price, hours).

    Args:
        config: The endpoint (its ``batch`` policy, provider, model, key).
        alias: The endpoint alias.
        policy: How to collect, submit and wait.
        clock: Sleeps of the linger timer and polls.
        api: The provider API (tests may pass one); default from ``config``.

    Example:
        >>> client = BatchClient(config, "fast", BatchPolicy(linger=1.0))
        >>> reply = await client.complete(LLMRequest(prompt="hi"), timeout=60)
    """

    def __init__(self, config: EndpointConfig, alias: str, policy: BatchPolicy, *,
                 clock: Clock | None = None, api: BatchAPI | None = None) -> None:
        self.alias = alias
        self.policy = policy
        self._max_requests, self._max_bytes = policy.limits(config.provider_api)
        self.api = api or batch_api_for(config, alias, window=policy.completion_window,
                                        max_bytes=self._max_bytes)
        directory = Path(policy.journal_dir) / alias if policy.journal_dir else None
        self.journal = BatchJournal(directory, self.api.provider)
        self._clock: Clock = clock or MonotonicClock()
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._first_at = self._last_at = 0.0
        self._timer: asyncio.Task[None] | None = None
        self._submits: set[asyncio.Task[None]] = set()
        self.trackers: dict[str, BatchTracker] = {}
        self.submitted_batches = 0
        self._finding: asyncio.Future[None] | None = None

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send ``request`` in a batch; its reply once the batch has ended.

        ``timeout`` (the synchronous request timeout) does not apply: a batch is bounded by
        the policy's ``max_wait`` instead.

        Raises:
            LLMError: The call's error in the batch, or the batch's (retryable unless the
                provider refused the call for good).
        """
        if self.journal.intents:
            await self._find_intents()
        payload = self.api.payload(request)
        digest = request_hash(self.api.provider, payload)
        claimed = self.journal.claim(digest)
        if claimed is not None:  # submitted by an earlier run: wait for that batch
            item, batch_id = claimed
        else:
            item = self.journal.new_item(digest)
            line = self.api.line(item, payload)
            if len(line) > self._max_bytes:
                raise BadRequestError(
                    f"Endpoint '{self.alias}': one request is {len(line):,} bytes, over the "
                    f"batch limit of {self._max_bytes:,} bytes; shorten the prompt.",
                    alias=self.alias)
            batch_id = await self._enqueue(item, line)
        outcome = await self._tracker(batch_id).outcome(item)
        if isinstance(outcome, LLMError):
            raise outcome
        return outcome

    async def _find_intents(self) -> None:
        # Once per client, before any claim: every caller waits for the same lookup.
        if self._finding is None:
            self._finding = asyncio.ensure_future(self._resolve_intents())
        await asyncio.shield(self._finding)

    async def _resolve_intents(self) -> None:
        for intent, (_, items) in list(self.journal.intents.items()):
            try:
                batch_id = await self.api.find(intent)
            except LLMError:
                batch_id = None  # cannot tell: its calls are submitted again
            if batch_id is not None:
                await self.journal.record(batch_id, items, intent)
            self.journal.intents.pop(intent, None)

    def _tracker(self, batch_id: str) -> BatchTracker:
        tracker = self.trackers.get(batch_id)
        if tracker is None:
            known = self.journal.batches.get(batch_id)
            submitted_at = known.submitted_at if known is not None else time.time()
            tracker = self.trackers[batch_id] = BatchTracker(
                self.api, batch_id, submitted_at, self.policy, self._clock, self.alias)
        return tracker

    def _enqueue(self, item: str, line: bytes) -> asyncio.Future[str]:
        if (len(self._pending) >= self._max_requests
                or self._pending_bytes + len(line) + 1 > self._max_bytes):
            self._flush()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        now = self._clock.now()
        if not self._pending:
            self._first_at = now
        self._last_at = now
        self._pending.append(_Pending(item, line, future))
        self._pending_bytes += len(line) + 1
        if len(self._pending) >= self._max_requests:
            self._flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.ensure_future(self._linger())
        return future

    async def _linger(self) -> None:
        policy = self.policy
        while self._pending:
            due = min(self._last_at + policy.linger, self._first_at + policy.max_linger)
            wait = due - self._clock.now()
            if wait <= 0:
                self._flush()
                return
            await self._clock.sleep(wait)

    def _flush(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if batch:
            task = asyncio.ensure_future(self._submit(batch))
            self._submits.add(task)
            task.add_done_callback(self._submits.discard)

    async def _submit(self, batch: list[_Pending]) -> None:
        items = [p.item for p in batch]
        intent = f"plait-{secrets.token_hex(8)}"
        try:
            # The intent line first: a kill after the provider creates the batch but before
            # its id is journaled is found again by the intent tag (BatchAPI.find).
            await self.journal.record_intent(intent, items)
            batch_id = await self.api.submit([p.line for p in batch], intent)
            # Durable before any caller learns of the batch: a kill from here on resumes.
            await self.journal.record(batch_id, items, intent)
        except Exception as exc:
            error = exc if isinstance(exc, LLMError) else ServerError(
                f"Endpoint '{self.alias}': submitting a batch failed: {type(exc).__name__}: "
                f"{exc}", alias=self.alias)
            for p in batch:
                if not p.submitted.done():
                    p.submitted.set_exception(error)
            return
        self.submitted_batches += 1
        for p in batch:
            if not p.submitted.done():
                p.submitted.set_result(batch_id)

    @property
    def http_requests(self) -> int:
        """HTTP requests this client has sent to the batch API."""
        return self.api.http.requests

    async def aclose(self) -> None:
        """Stop collecting and polling here; submitted batches run on (journaled)."""
        if self._timer is not None:
            self._timer.cancel()
        for tracker in self.trackers.values():
            tracker.cancel()
        for task in list(self._submits):
            task.cancel()
        await asyncio.gather(*self._submits, return_exceptions=True)
        for p in self._pending:
            p.submitted.cancel()
        self._pending = []
        await self.api.http.aclose()
