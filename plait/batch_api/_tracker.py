"""Waiting for one submitted batch: bounded polling, then its results for every waiter."""

from __future__ import annotations

import asyncio
import time

from plait.batch_api._policy import BatchPolicy
from plait.batch_api._providers import BatchAPI, BatchState, ItemOutcome
from plait.errors import LLMError, TransientError
from plait.resources.clock import Clock

__all__ = ["BatchTracker"]

_CANCEL_GRACE_POLLS = 10  # polls after a cancel, to collect what the batch did finish


class BatchTracker:
    """Polls one batch until it ends (or ``max_wait`` passes) and hands out its results.

    One poll loop per batch, however many calls wait on it; it starts with the first
    waiter. It never raises: a batch that fails, expires, is cancelled or cannot be read
    gives each call an ``LLMError`` (retryable unless the provider refused for good), and
    the endpoint pool retries it per the endpoint's ``max_retries``.

    Args:
        api: The provider's batch API.
        batch_id: The batch.
        submitted_at: Wall-clock time of submission (from the journal, so a resumed run
            keeps the original deadline).
        policy: Poll interval and ``max_wait``.
        clock: Sleeps between polls.
        alias: Endpoint alias, for messages.
    """

    def __init__(self, api: BatchAPI, batch_id: str, submitted_at: float,
                 policy: BatchPolicy, clock: Clock, alias: str) -> None:
        self.batch_id = batch_id
        self._api = api
        # Wall time is what the journal keeps across runs; the clock is what this run sleeps on.
        self._deadline = clock.now() + (submitted_at + policy.max_wait - time.time())
        self._policy = policy
        self._clock = clock
        self._alias = alias
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._results: dict[str, ItemOutcome] = {}
        self._missing: LLMError | None = None
        self.polls = 0

    async def outcome(self, item: str) -> ItemOutcome:
        """The result of call ``item`` once the batch has ended."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        # One Event for every waiter: a waiter cancelled (its row cancelled) leaves the
        # poll loop and the other waiters alone.
        await self._ended.wait()
        missing = self._missing
        assert missing is not None  # set together with _ended
        return self._results.get(item, missing)

    def cancel(self) -> None:
        """Stop polling (this process only: the batch itself runs on, journaled)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _run(self) -> None:
        self._results, self._missing = await self._wait()
        self._ended.set()

    async def _wait(self) -> tuple[dict[str, ItemOutcome], LLMError]:
        where = f"Endpoint '{self._alias}', batch {self.batch_id}"
        cancel_by: float | None = None
        error: LLMError | None = None
        while True:
            state: BatchState | None = None
            try:
                self.polls += 1
                state = await self._api.state(self.batch_id)
                if state.phase == "ended":
                    results = await self._api.results(state)
                    why = (self._too_slow(where, error) if cancel_by is not None else
                           f"{where} ended ({state.status}) without a result for this call; "
                           "it is retried in a new batch.")
                    return results, TransientError(why, alias=self._alias)
            except LLMError as exc:
                if not exc.retryable:
                    return {}, exc
                error = exc  # transient: poll again, within max_wait
            if state is not None and state.phase == "failed":
                return {}, TransientError(f"{where} failed as a whole: {state.detail}",
                                          alias=self._alias)
            now = self._clock.now()
            if cancel_by is None and now > self._deadline:
                cancel_by = now + _CANCEL_GRACE_POLLS * self._policy.poll_interval
                try:
                    await self._api.cancel(self.batch_id)
                except LLMError:
                    pass  # best effort: the deadline below still ends the wait
            if cancel_by is not None and now > cancel_by:
                return {}, TransientError(self._too_slow(where, error), alias=self._alias)
            await self._clock.sleep(self._policy.poll_interval)

    def _too_slow(self, where: str, error: LLMError | None) -> str:
        last = f" (last poll error: {error})" if error is not None else ""
        return (f"{where} did not finish within max_wait={self._policy.max_wait:g}s and was "
                f"cancelled{last}. Its unfinished calls are retried in a new batch; raise "
                "BatchPolicy(max_wait=...) if batches take longer.")
