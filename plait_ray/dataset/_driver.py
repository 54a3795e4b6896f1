"""The driver loop of a dataset run: chunks out to worker actors, a bounded number in flight.

The driver pulls chunks from the source lazily and keeps at most ``max_chunks_in_flight``
submitted, so its memory is flat in the dataset's size. Ray never retries a chunk by itself
(``max_restarts=0``, no task retries): a worker that dies (its node lost, OOM, killed) fails
its chunks, which the driver hands to the other workers and to a replacement actor. A chunk
the dead worker had already committed is recognised by its part file and not paid twice.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from plait.errors import PlaitError
from plait.io import Chunk
from plait_ray.dataset._worker import ChunkDone, DatasetWorker
from plait_ray.worker import WorkerLostError

__all__ = ["Fleet", "drive"]

_ray: Any = ray  # Ray's object-ref API is only partly typed


@dataclass
class _Worker:
    handle: Any
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
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        if self._spawned >= self._budget:
            return
        handle = self._actor.options(**self._options).remote(self._payload, self._spawned)
        self._spawned += 1
        self.starting[handle.ready.remote()] = _Worker(handle)

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
            if isinstance(cause, PlaitError):
                raise cause from None
            raise
        self.live.append(worker)

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


def drive(chunks: Iterator[Chunk], fleet: Fleet, max_in_flight: int,
          on_done: Callable[[Chunk, ChunkDone], None]) -> None:
    """Run every chunk on the fleet; call ``on_done`` as each one is committed.

    Raises:
        WorkerLostError: No worker is alive and none started within the fleet's timeout.
        PlaitError: A worker failed for a reason other than a row (e.g. the output is not
            writable); row failures are in the output instead.
    """
    pending: dict[Any, tuple[Chunk, _Worker]] = {}
    retry: deque[Chunk] = deque()
    exhausted = False
    idle_since: float | None = None
    while True:
        while fleet.live and len(pending) < max_in_flight:
            chunk = retry.popleft() if retry else None if exhausted else next(chunks, None)
            if chunk is None:
                exhausted = True
                break
            worker = fleet.pick()
            worker.load += 1
            pending[worker.handle.run_chunk.remote(chunk)] = (chunk, worker)
        if exhausted and not pending and not retry:
            return
        waitable = [*pending, *fleet.starting]
        if not waitable:
            raise WorkerLostError(_lost_message(fleet))
        ready, _ = _ray.wait(waitable, num_returns=1, timeout=1.0)
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


def _lost_message(fleet: Fleet) -> str:
    return (
        f"Every dataset worker died ({fleet.lost} lost) and no replacement started within "
        f"{fleet.start_timeout_s:g} s, so the run stopped. Committed chunks are kept: fix the "
        "cause (node failures, memory, worker_resources no node can satisfy) and rerun with "
        "the same output to resume."
    )
