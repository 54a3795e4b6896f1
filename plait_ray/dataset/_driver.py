"""The driver loop of a dataset run: chunks out to worker actors, a bounded number in flight.

The driver pulls chunks from the source lazily and keeps at most ``max_chunks_in_flight``
submitted, so its memory is flat in the dataset's size. Ray never retries a chunk by itself
(``max_restarts=0``, no task retries): a worker that dies (its node lost, OOM, killed) fails
its chunks, which the driver hands to the other workers and to a replacement actor. A chunk
the dead worker had already committed is recognised by its part file and not paid twice.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from plait.errors import MissingAPIKeyError, PlaitError
from plait.io import Chunk
from plait_ray.dataset._worker import ChunkDone, DatasetWorker
from plait_ray.worker import WorkerLostError

__all__ = ["Fleet", "PartRetry", "Work", "drive"]

_POLL_S = 0.5  # how often the driver asks the workers for their row counts


@dataclass(frozen=True)
class PartRetry:
    """Rerun the failed rows of the committed part [start, end) (a resumed run)."""

    start: int
    end: int


Work = Chunk | PartRetry

_ray: Any = ray  # Ray's object-ref API is only partly typed


@dataclass
class _Worker:
    handle: Any
    index: int
    load: int = 0


class Fleet:
    """The run's worker actors: started, replaced when they die, closed at the end.

    Args:
        payload_ref: Object ref of the ``DatasetPayload``.
        count: Workers to keep alive.
        actor_options: ``.options()`` of each actor (CPUs, resources, runtime_env...).
        start_timeout_s: Longest wait for a worker to start while none is alive.
    """

    def __init__(self, payload_ref: Any, count: int, actor_options: Mapping[str, Any],
                 start_timeout_s: float) -> None:
        self._actor: Any = ray.remote(DatasetWorker)
        self._payload = payload_ref
        self._options = dict(actor_options)
        self.start_timeout_s = start_timeout_s
        self.live: list[_Worker] = []
        self.starting: dict[Any, _Worker] = {}
        self._spawned = 0
        # Replacements are bounded so a worker that always dies cannot loop forever.
        self._budget = 3 * count + 2
        self.lost = 0
        self.rows: dict[int, tuple[int, int, float]] = {}  # worker -> (ok, failed, USD)
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        if self._spawned >= self._budget:
            return
        handle = self._actor.options(**self._options).remote(self._payload, self._spawned)
        self._spawned += 1
        self.starting[handle.ready.remote()] = _Worker(handle, self._spawned - 1)

    def started(self, ref: Any) -> None:
        """A worker's ``ready`` call finished: it joins the live set, or is replaced.

        Raises:
            PlaitError: The worker could not start for a reason a new worker would share
                (a missing API key); the message is the worker's.
        """
        worker = self.starting.pop(ref)
        try:
            _ray.get(ref)
        except RayActorError:
            self.lost += 1
            self._spawn()
            return
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, MissingAPIKeyError):
                raise _key_missing_on_workers(cause) from None
            if isinstance(cause, PlaitError):
                raise cause from None
            raise
        self.live.append(worker)

    def poll_rows(self) -> tuple[int, int, float]:
        """Ask every live worker for its row counts; return (succeeded, failed, USD) of all."""
        refs = {w.handle.rows_done.remote(): w for w in self.live}
        ready, _ = _ray.wait(list(refs), num_returns=len(refs), timeout=5.0)
        for ref in ready:
            try:
                self.rows[refs[ref].index] = _ray.get(ref)
            except (RayActorError, RayTaskError, GetTimeoutError):
                continue
        return (sum(ok for ok, _, _ in self.rows.values()),
                sum(bad for _, bad, _ in self.rows.values()),
                sum(usd for _, _, usd in self.rows.values()))

    def pick(self) -> _Worker:
        """The live worker with the fewest chunks in flight."""
        return min(self.live, key=lambda w: w.load)

    def remove(self, worker: _Worker) -> None:
        """Forget a dead worker (once) and start a replacement."""
        if worker not in self.live:
            return
        self.live.remove(worker)
        self.lost += 1
        ray.kill(worker.handle, no_restart=True)  # pyright: ignore[reportUnknownMemberType]
        self._spawn()

    def close(self, timeout_s: float = 30.0) -> list[dict[str, dict[str, Any]]]:
        """Flush and close every live worker; return their endpoint statistics."""
        refs = [w.handle.close.remote() for w in self.live]
        stats: list[dict[str, dict[str, Any]]] = []
        ready, _ = _ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for ref in ready:
            try:
                stats.append(_ray.get(ref))
            except (RayActorError, RayTaskError):
                continue
        for worker in [*self.live, *self.starting.values()]:
            ray.kill(worker.handle, no_restart=True)  # pyright: ignore[reportUnknownMemberType]
        self.live.clear()
        self.starting.clear()
        return stats


def drive(chunks: Iterator[Work], fleet: Fleet, max_in_flight: int,
          on_done: Callable[[Work, ChunkDone], None],
          on_rows: Callable[[int, int, float], None] | None = None,
          admit: Callable[[Work], bool] | None = None) -> None:
    """Run every chunk on the fleet; call ``on_done`` as each one is committed.

    ``on_rows(succeeded, failed, usd)`` gets the rows the workers have finished so far
    (and what they cost), polled about every half second, so a progress bar moves per row
    rather than per chunk. ``admit(chunk)`` (a budget) is asked before a chunk starts; the
    first refusal ends the run once the chunks in flight are committed.

    Raises:
        WorkerLostError: No worker is alive and none started within the fleet's timeout.
        PlaitError: A worker failed for a reason other than a row (e.g. the output is not
            writable); row failures are in the output instead.
    """
    pending: dict[Any, tuple[Work, _Worker]] = {}
    retry: deque[Work] = deque()
    exhausted = False
    idle_since: float | None = None
    polled = time.monotonic()
    while True:
        if on_rows is not None and time.monotonic() - polled >= _POLL_S:
            on_rows(*fleet.poll_rows())
            polled = time.monotonic()
        while fleet.live and len(pending) < max_in_flight:
            chunk = retry.popleft() if retry else None if exhausted else next(chunks, None)
            if chunk is not None and admit is not None and not admit(chunk):
                chunk = None  # the budget: no further chunk starts (a lost one is retried)
            if chunk is None:
                exhausted = True
                break
            worker = fleet.pick()
            worker.load += 1
            ref = (worker.handle.retry_part.remote(chunk.start, chunk.end)
                   if isinstance(chunk, PartRetry) else worker.handle.run_chunk.remote(chunk))
            pending[ref] = (chunk, worker)
        if exhausted and not pending and not retry:
            return
        waitable = [*pending, *fleet.starting]
        if not waitable:
            raise WorkerLostError(_lost_message(fleet))
        ready, _ = _ray.wait(waitable, num_returns=1, timeout=_POLL_S)
        if not ready:
            if pending:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > fleet.start_timeout_s:
                raise WorkerLostError(_lost_message(fleet))
            continue
        ref = ready[0]
        if ref in fleet.starting:
            fleet.started(ref)
            continue
        chunk, worker = pending.pop(ref)
        worker.load -= 1
        try:
            done: ChunkDone = _ray.get(ref)
        except RayActorError:
            fleet.remove(worker)
            retry.append(chunk)
            continue
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, PlaitError):
                raise cause from None
            raise
        on_done(chunk, done)


def _key_missing_on_workers(exc: MissingAPIKeyError) -> MissingAPIKeyError:
    name = getattr(exc, "env_var", None) or "the key variable"
    here = ("It is set in this driver's environment, but" if name in os.environ else
            "It is not set here either, and")
    exc.args = (
        f"{exc.args[0]} -- it is missing on the Ray workers. {here} keys are never shipped "
        f"to workers. Give it to them with executor_options={{'env_file': PATH}} (CLI: "
        f"--env-file PATH; a file every node can read, whose values stay out of Ray's logs), "
        f"or {{'env_vars': {{'{name}': ...}}}} (CLI: --env {name}; shown in plain text in "
        "Ray's runtime_env_agent logs and dashboard), or set it in the cluster nodes' "
        "environment.",)
    return exc


def _lost_message(fleet: Fleet) -> str:
    return (
        f"Every dataset worker died ({fleet.lost} lost) and no replacement started within "
        f"{fleet.start_timeout_s:g} s, so the run stopped. Committed chunks are kept: fix the "
        "cause (node failures, memory, worker_resources no node can satisfy) and rerun with "
        "the same output to resume."
    )
