"""Resuming a call from, and recording it into, a checkpoint directory.

Rows already completed are returned from the checkpoint without running; rows that had some
LLM nodes done reuse those values (no request is repeated); every finished row and LLM node is
recorded as it completes.

Every row is hashed as it is read (:func:`~plait.checkpoint.row_hash`, lists and generators
alike) and its records carry that hash: a stored result serves a row only when the row's
inputs are unchanged, and only rows of this call are ever returned. With ``resume="auto"`` a
row whose inputs differ from the checkpoint's raises ``CheckpointError`` (for a list this is
caught up front by the run's fingerprint); ``resume="force"`` runs such rows again instead.

Pydantic values are rebuilt only as the classes the pipeline declares (:func:`declared_models`),
so a checkpoint file can never make plait import a module.

Writes stay off the event loop: the store is opened with ``auto_flush=False`` and the session
flushes it with ``aflush()`` (the file write runs in a worker thread) whenever it is due, one
flush at a time, plus a final flush when the call ends. A process killed mid-run loses only
the records not yet committed: the buffer (at most ``flush_every`` records, or what arrived
during ``flush_interval``) and the one flush being written.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from plait.checkpoint import CheckpointStore, fingerprint_inputs
from plait.checkpoint._manifest import STREAM_FINGERPRINT, row_hash
from plait.errors import CheckpointError
from plait.execution.results import RowResult
from plait.serialize import model_registry

if TYPE_CHECKING:
    from plait.clients.base import Usage
    from plait.execution.contract import Job, Row
    from plait.execution.inputs import CallInputs
    from plait.execution.settings import ResolvedSettings
    from plait.graph import InferenceGraph
    from plait.module import Module

__all__ = ["CheckpointSession", "declared_models", "open_checkpoint", "pipeline_hash"]


def pipeline_hash(module: Module, graph: InferenceGraph) -> str:
    """A hash of what determines the outputs: graph structure, prompts and LLM settings."""
    h = hashlib.sha256(graph.structural_hash().encode())
    h.update(json.dumps(module.state_dict(), sort_keys=True).encode())
    for node in graph.llm_nodes():
        llm = module.get_submodule(node.target)
        fmt = getattr(llm, "response_format", None)
        h.update(repr((node.id, getattr(llm, "temperature", None),
                       getattr(llm, "max_tokens", None),
                       fmt.__name__ if fmt is not None else None)).encode())
    return h.hexdigest()[:16]


def declared_models(module: Module) -> dict[str, type[BaseModel]]:
    """The pydantic classes a pipeline declares, by stored name.

    Those are the ``response_format`` of its LLMInference modules and the models named in the
    return annotations of its modules' ``forward()`` (with every model nested in their fields).
    """
    found: list[Any] = []
    for sub in module.modules():
        fmt = getattr(sub, "response_format", None)
        if isinstance(fmt, type) and issubclass(fmt, BaseModel):
            found.append(fmt)
        try:
            annotation = inspect.signature(sub.forward, eval_str=True).return_annotation
        except (NameError, TypeError, ValueError, SyntaxError):
            continue  # an annotation that does not resolve declares nothing
        found.append(annotation)
    return model_registry(found)


class CheckpointSession:
    """A call's view of its checkpoint (a no-op when no directory is set)."""

    def __init__(self, store: CheckpointStore | None = None) -> None:
        self.store = store
        self.resumed = 0
        self._flushing: asyncio.Task[None] | None = None
        self._hashes: dict[int, str] = {}  # rows handed to the executor -> their input hash
        self._served: list[tuple[int, str]] = []  # done rows read, not yet returned

    def pending_rows(self, rows: Iterable[Row]) -> Iterator[Row]:
        """The rows to run: done rows are set aside (to be returned from the checkpoint).

        Raises:
            CheckpointError: With ``resume="auto"``, a row's inputs differ from the ones the
                checkpoint holds results for.
        """
        store = self.store
        for row in rows:
            if store is None:
                yield row
                continue
            index, args, kwargs = row
            digest = row_hash(args, kwargs)
            status = store.row_status(index, digest)
            if status == "done":
                self._served.append((index, digest))
                continue
            if status == "changed" and store.resume == "auto":
                raise CheckpointError(
                    f"Row {index}'s inputs differ from the ones checkpoint {store.directory} "
                    "holds results for: this is not the run that wrote it. Resuming would mix "
                    "results of different inputs. Pass resume='force' to reuse stored results "
                    "only for rows whose inputs are unchanged (the others run again), or "
                    "resume='fresh' to delete the old checkpoint and start over."
                )
            self._hashes[index] = digest
            yield row

    def presets(self, row: int) -> dict[str, Any] | None:
        """Node values stored for the row's current inputs (None when there are none)."""
        if self.store is None:
            return None
        return self.store.completed_nodes(row, self._hashes.get(row, "")) or None

    async def results(self, running: AsyncIterator[RowResult]) -> AsyncIterator[RowResult]:
        """Every result of the call: the executor's, recorded as they finish.

        Rows served from the checkpoint are interleaved as the executor reads past them, and
        the rest follow when it ends, so each row of the call is returned exactly once.
        """
        try:
            async for result in running:
                for served in self._drain():
                    yield served
                await self.row_finished(result)
                yield result
        finally:
            # Stop the executor's pending work before the store is closed by the caller.
            close = getattr(running, "aclose", None)
            if close is not None:
                await close()
        for served in self._drain():
            yield served

    def _drain(self) -> Iterator[RowResult]:
        if self.store is None or not self._served:
            return
        wanted, self._served = self._served, []
        for record in self.store.read_rows(wanted):
            self.resumed += 1
            yield RowResult(record.row_id, record.output, None, record.input_tokens,
                            record.output_tokens)

    async def row_finished(self, result: RowResult) -> None:
        """Record a finished row (a failed row is recorded as failed, to be retried)."""
        store = self.store
        if store is None:
            return
        failed = self._flushing
        if failed is not None and failed.done() and failed.exception() is not None:
            # A storage error fails the run here, not a row: its records are back in the
            # buffer, and aclose() tries once more to write them.
            self._flushing = None
            failed.result()
        digest = self._hashes.pop(result.index, "")
        if result.error is None:
            store.record_row(result.index, result.output, input_tokens=result.input_tokens,
                             output_tokens=result.output_tokens, input_hash=digest)
        else:
            store.record_failure(result.index, result.error, input_hash=digest)
        self._flush_if_due(store)

    def record_node(self, row: int, node_id: str, value: Any, usage: Usage | None) -> None:
        """Record one completed LLM node of an unfinished row."""
        store = self.store
        if store is None:
            return
        used = (usage.input_tokens, usage.output_tokens) if usage is not None else None
        store.record_node(row, node_id, value, used, input_hash=self._hashes.get(row, ""))
        self._flush_if_due(store)
    def _flush_if_due(self, store: CheckpointStore) -> None:
        # Called from the interpreter's synchronous node hook too, so the flush runs as a
        # task. One at a time: records arriving meanwhile wait in the buffer for the next one.
        # A failed flush is left in place for row_finished() to raise.
        running = self._flushing
        if running is not None and (not running.done() or running.exception() is not None):
            return
        if store.flush_due:
            self._flushing = asyncio.get_running_loop().create_task(store.aflush())

    async def aclose(self) -> None:
        """Wait for a running flush, write what is still buffered and close the store."""
        store = self.store
        if store is None:
            return
        running, self._flushing = self._flushing, None
        try:
            if running is not None:
                await running
        finally:
            # Even after a failed flush: its records went back to the buffer.
            await store.aflush()
            store.close()


def open_checkpoint(module: Module, graph: InferenceGraph, inputs: CallInputs, job: Job,
                    settings: ResolvedSettings) -> CheckpointSession:
    """Open ``settings.checkpoint_dir`` for this call and wire it into ``job``."""
    if settings.checkpoint_dir is None:
        return CheckpointSession()
    if inputs.originals is not None:
        fingerprint = fingerprint_inputs(inputs.originals)
    elif not inputs.is_batch:
        rows = list(inputs.rows)
        inputs.rows = rows
        fingerprint = fingerprint_inputs([[list(r[1]), r[2]] for r in rows])
    else:
        # A generator can be read only once: each row is checked as it is read instead.
        fingerprint = STREAM_FINGERPRINT
    store = CheckpointStore(settings.checkpoint_dir, graph_hash=pipeline_hash(module, graph),
                            input_fingerprint=fingerprint, resume=settings.resume,
                            auto_flush=False, models=declared_models(module)).open()
    session = CheckpointSession(store)
    job.rows = session.pending_rows(job.rows)
    job.presets = session.presets
    job.on_node = session.record_node
    return session
