"""Resuming a call from, and recording it into, a checkpoint directory.

Rows already completed are returned from the checkpoint without running; rows that had some
LLM nodes done reuse those values (no request is repeated); every finished row and LLM node is
recorded as it completes.

Writes stay off the event loop: the store is opened with ``auto_flush=False`` and the session
flushes it with ``aflush()`` (the file write runs in a worker thread) whenever it is due, one
flush at a time, plus a final flush when the call ends. A process killed mid-run loses only
the records not yet committed: the buffer (at most ``flush_every`` records, or what arrived
during ``flush_interval``) and the one flush being written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from plait.checkpoint import CheckpointStore, fingerprint_inputs
from plait.execution.results import RowResult

if TYPE_CHECKING:
    from plait.clients.base import Usage
    from plait.execution.contract import Job
    from plait.execution.inputs import CallInputs
    from plait.execution.settings import ResolvedSettings
    from plait.graph import InferenceGraph
    from plait.module import Module

__all__ = ["CheckpointSession", "open_checkpoint", "pipeline_hash"]


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


class CheckpointSession:
    """A call's view of its checkpoint (a no-op when no directory is set)."""

    def __init__(self, store: CheckpointStore | None = None) -> None:
        self.store = store
        self.resumed = 0
        self._flushing: asyncio.Task[None] | None = None

    async def completed(self) -> AsyncIterator[RowResult]:
        """Rows completed by earlier runs, as results."""
        if self.store is None:
            return
        for record in self.store.iter_completed_rows():
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
        if result.error is None:
            store.record_row(result.index, result.output, input_tokens=result.input_tokens,
                             output_tokens=result.output_tokens)
        else:
            store.record_failure(result.index, result.error)
        self._flush_if_due(store)

    def record_node(self, row: int, node_id: str, value: Any, usage: Usage | None) -> None:
        """Record one completed LLM node of an unfinished row."""
        store = self.store
        if store is None:
            return
        used = (usage.input_tokens, usage.output_tokens) if usage is not None else None
        store.record_node(row, node_id, value, used)
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
        # A generator can be read only once: resuming trusts that it yields the same rows.
        fingerprint = "stream:unverified"
    store = CheckpointStore(settings.checkpoint_dir, graph_hash=pipeline_hash(module, graph),
                            input_fingerprint=fingerprint, resume=settings.resume,
                            auto_flush=False).open()
    session = CheckpointSession(store)
    pending = job.rows
    job.rows = (row for row in pending if not store.is_row_done(row[0]))
    job.presets = lambda row: store.completed_nodes(row) or None
    job.on_node = session.record_node
    return session
