"""CheckpointStore: incremental, crash-safe, multi-writer persistence of a run's results."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from plait.checkpoint._files import (
    SEGMENT_GLOB,
    TEMP_GLOB,
    Record,
    parse_segment_name,
    read_segment,
    segment_name,
    write_segment,
)
from plait.checkpoint._manifest import MANIFEST_NAME, Manifest
from plait.checkpoint._state import CheckpointState, RowRecord, load_state
from plait.errors import CheckpointError
from plait.serialize import ErrorInfo, ModelRegistry, to_jsonable

__all__ = ["CheckpointStore", "ResumeMode"]

ResumeMode = Literal["auto", "force", "fresh"]
RowStatus = Literal["done", "changed", "new"]
_RESUME_MODES = ("auto", "force", "fresh")
_WRITER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _default_writer_id() -> str:
    # Host + pid name the writer for humans; the random part keeps a restarted process (same
    # pid on another run, same host) from ever reusing a previous writer's file names.
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False)


class CheckpointStore:
    """Persist completed rows and LLM node values of a run; resume from them.

    Records are buffered in memory and written as one Arrow segment per flush; see the
    ``plait.checkpoint`` docstring for the layout, resume rules and multi-writer semantics.

    Args:
        directory: The checkpoint directory (created if missing). Shared by every writer.
        graph_hash: Structural hash of the traced graph.
        input_fingerprint: :func:`~plait.checkpoint.fingerprint_inputs` of the rows, or
            ``"stream"`` when rows are checked one by one as they are read.
        resume: ``"auto"`` resumes when the checkpoint matches and raises otherwise,
            ``"force"`` resumes even when the pipeline or inputs changed, reusing a row's
            records only where that row's inputs hash the same (``input_hash``), ``"fresh"``
            deletes the old records first. Only one process (the driver) may use ``"fresh"``.
        models: The pydantic classes stored values may be rebuilt as (the pipeline's own,
            see :func:`plait.serialize.model_registry`); nothing else is ever imported.
        writer_id: Names this writer's segment files; unique per live writer. Default:
            host, pid and a random suffix.
        flush_every: Flush once this many records are buffered.
        flush_interval: Flush on the next record once this many seconds passed since the
            last flush.
        auto_flush: Flush synchronously inside ``record_*`` when due. Async callers set it
            False and ``await aflush()`` when :attr:`flush_due`, keeping writes off the loop.
        clock: Monotonic seconds, for ``flush_interval``; injectable for tests.

    Example:
        >>> with CheckpointStore(path, graph_hash=h, input_fingerprint=f) as store:
        ...     for row_id, row in enumerate(rows):
        ...         if not store.is_row_done(row_id):
        ...             store.record_row(row_id, run(row))
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        graph_hash: str,
        input_fingerprint: str,
        resume: ResumeMode = "auto",
        writer_id: str | None = None,
        flush_every: int = 64,
        flush_interval: float = 1.0,
        auto_flush: bool = True,
        clock: Callable[[], float] = time.monotonic,
        models: ModelRegistry | None = None,
    ) -> None:
        if resume not in _RESUME_MODES:
            raise CheckpointError(
                f"resume must be 'auto', 'force' or 'fresh', got {resume!r}. Use 'auto' to "
                "resume only a matching checkpoint."
            )
        if flush_every < 1:
            raise CheckpointError(f"flush_every must be >= 1, got {flush_every}.")
        if flush_interval < 0:
            raise CheckpointError(f"flush_interval must be >= 0 seconds, got {flush_interval}.")
        if writer_id is not None and not _WRITER_RE.match(writer_id):
            raise CheckpointError(
                f"writer_id must be 1-64 characters of letters, digits, '_', '.', '-'; got "
                f"{writer_id!r}. It becomes part of file names."
            )
        self.directory = Path(directory)
        self.graph_hash = graph_hash
        self.input_fingerprint = input_fingerprint
        self.resume: ResumeMode = resume
        self.writer_id = writer_id or _default_writer_id()
        self.flush_every = flush_every
        self.flush_interval = flush_interval
        self.auto_flush = auto_flush
        self._clock = clock
        self._models: ModelRegistry = models or {}
        self._lock = threading.Lock()
        self._buffer: list[Record] = []
        self._last_flush = clock()
        self._next_seq = 0
        self._last_commit_ns = 0
        self._state = CheckpointState()
        self._done: set[tuple[int, str]] = set()
        self._manifest: Manifest | None = None
        self._open = False

    # -- opening -----------------------------------------------------------------------------

    def open(self, *, load: bool = True) -> Self:
        """Validate or create the manifest and load what earlier runs completed.

        Args:
            load: Read the committed records. Writers that only append (Ray workers told
                which rows to skip by their driver) pass False and open in O(1).

        Returns:
            ``self``.

        Raises:
            CheckpointError: The checkpoint belongs to another pipeline or other inputs and
                ``resume="auto"``; or it cannot be read.
        """
        self._make_directory()
        if self.resume == "fresh":
            self._delete_records()
        manifest = Manifest.read(self.directory)
        if manifest is None:
            owner = self._orphan_owner()
            manifest = Manifest.new(self.graph_hash, self.input_fingerprint, owner)
            manifest.write(self.directory)
        elif (change := manifest.mismatch(self.graph_hash, self.input_fingerprint)) is not None:
            if self.resume != "force":
                raise CheckpointError(
                    f"Checkpoint {self.directory} does not match this run: {change}. Resuming "
                    "would mix results of different runs. Pass resume='force' to resume "
                    "anyway (a row's stored results are reused only where that row's inputs "
                    "are unchanged), or resume='fresh' to delete the old checkpoint and start "
                    "over."
                )
            # Adopt the new identity so later runs of this same pipeline resume with "auto".
            manifest = replace(
                manifest, graph_hash=self.graph_hash, input_fingerprint=self.input_fingerprint
            )
            manifest.write(self.directory)
        self._manifest = manifest
        self._next_seq = self._first_free_seq()
        if load:
            self._state = load_state(self.directory, manifest.checkpoint_id, self._models)
        self._last_flush = self._clock()
        self._open = True
        return self

    def _make_directory(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(
                f"checkpoint_dir {self.directory} is a file, not a directory. Pass a directory "
                f"path (created if missing), e.g. checkpoint_dir='{self.directory}.ckpt', or "
                "move the file away."
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint_dir {self.directory} cannot be created ({type(exc).__name__}: "
                f"{exc}). Pass a directory this process can write."
            ) from None

    def _delete_records(self) -> None:
        # Manifest first: a crash midway leaves segments without a manifest, which open()
        # refuses to adopt silently, instead of a manifest vouching for a partial set.
        (self.directory / MANIFEST_NAME).unlink(missing_ok=True)
        for pattern in (SEGMENT_GLOB, TEMP_GLOB):
            for path in self.directory.glob(pattern):
                path.unlink(missing_ok=True)

    def _orphan_owner(self) -> str | None:
        # Segments without a manifest: with "auto" they are refused (whose rows are they?);
        # "force" adopts them, keeping their checkpoint id so they stay readable. Their rows
        # still serve only rows whose inputs hash the same.
        orphans = sorted(self.directory.glob(SEGMENT_GLOB))
        if not orphans:
            return None
        if self.resume == "auto":
            raise CheckpointError(
                f"Checkpoint {self.directory} has {len(orphans)} segment files (e.g. "
                f"{orphans[0].name}) but no {MANIFEST_NAME}, so it is unknown which run they "
                "belong to. Rerun with resume='fresh' to delete them, resume='force' to adopt "
                "them for this run (only rows whose inputs are unchanged are reused), or use "
                "another directory."
            )
        owners = {read_segment(path).checkpoint_id for path in orphans}
        if len(owners) != 1:
            raise CheckpointError(
                f"Checkpoint {self.directory} has no {MANIFEST_NAME} and its segment files "
                f"come from {len(owners)} different checkpoints, so they cannot be adopted "
                "together. Rerun with resume='fresh' to delete them, or keep only one "
                "checkpoint's part-*.arrow files in the directory."
            )
        return owners.pop()

    def _first_free_seq(self) -> int:
        # Only an explicit, reused writer_id can collide; never overwrite its earlier segments.
        seqs = [
            parsed[1]
            for path in self.directory.glob(f"part-{self.writer_id}-*.arrow")
            if (parsed := parse_segment_name(path.name)) and parsed[0] == self.writer_id
        ]
        return max(seqs, default=-1) + 1

    @property
    def manifest(self) -> Manifest:
        """The directory's manifest (after :meth:`open`)."""
        if self._manifest is None:
            raise CheckpointError("CheckpointStore is not open; call open() first.")
        return self._manifest

    # -- reading -----------------------------------------------------------------------------

    def completed_row_ids(self) -> frozenset[int]:
        """Ids of rows completed by earlier runs, for any inputs (as loaded by :meth:`open`)."""
        return frozenset(self._state.done)

    def completed_rows(self) -> dict[int, RowRecord]:
        """Row id -> stored output and usage of the latest completed version of every row.

        Outputs are read from disk on each call; use :meth:`iter_completed_rows` to stream them.
        Rows recorded by this store since :meth:`open` are not included.
        """
        return {record.row_id: record for record in self._state.iter_rows()}

    def iter_completed_rows(self) -> Iterator[RowRecord]:
        """Yield the rows of :meth:`completed_rows` one at a time, in no particular order."""
        return self._state.iter_rows()

    def read_rows(self, rows: Iterable[tuple[int, str]]) -> Iterator[RowRecord]:
        """The stored outputs of ``(row id, input hash)`` pairs that are done (others skipped).

        Reads one segment at a time; use it to serve the rows :meth:`row_status` called done.
        """
        done = self._state.done
        wanted = ((row_id, done[row_id][digest]) for row_id, digest in rows
                  if digest in done.get(row_id, {}))
        return self._state.iter_rows(wanted)

    def failed_rows(self) -> dict[int, ErrorInfo]:
        """Row id -> stored error, for rows that failed in earlier runs and are not done.

        Failed rows are not completed: a resumed run retries them (reusing their completed
        nodes), so this is information only.
        """
        return self._state.read_failures()

    def is_row_done(self, row_id: int, input_hash: str = "") -> bool:
        """Whether the row, with these inputs, completed in an earlier run or since :meth:`open`."""
        return (row_id, input_hash) in self._done or input_hash in self._state.done.get(row_id, {})

    def row_status(self, row_id: int, input_hash: str) -> RowStatus:
        """Whether a row with these inputs is stored.

        Returns:
            ``"done"`` (completed for these inputs), ``"changed"`` (records exist only for
            other inputs: the row's inputs differ from the checkpoint's) or ``"new"``.
        """
        if self.is_row_done(row_id, input_hash):
            return "done"
        known = self._state.known_hashes(row_id)
        return "changed" if known and input_hash not in known else "new"

    def completed_nodes(self, row_id: int, input_hash: str = "") -> dict[str, Any]:
        """Node id -> value of the nodes an earlier run completed for a row that is not done.

        Only nodes recorded for the same inputs (``input_hash``) count. Empty for done rows
        (their output is all a run needs) and for unknown rows.

        Raises:
            CheckpointError: A stored value cannot be restored (the message names the file).
        """
        if self.is_row_done(row_id, input_hash):
            return {}
        return self._state.node_values(row_id, input_hash)

    # -- writing -----------------------------------------------------------------------------

    def record_node(
        self,
        row_id: int,
        node_id: str,
        value: Any,
        usage: tuple[int, int] | None = None,
        *,
        input_hash: str = "",
    ) -> None:
        """Buffer the value of a completed node of a row that is not done yet.

        Args:
            row_id: The row.
            node_id: The graph node's id.
            value: The node's output (see :mod:`plait.serialize` for what is allowed).
            usage: ``(input_tokens, output_tokens)`` of the LLM call, if any.
            input_hash: :func:`~plait.checkpoint.row_hash` of the row's inputs.

        Raises:
            CheckpointError: The value cannot be serialized, or the store is not open.
        """
        if (row_id, input_hash) in self._done:
            return
        self._require_open()
        tokens_in, tokens_out = usage or (0, 0)
        self._append((row_id, "node", node_id, _dumps(value), tokens_in, tokens_out, input_hash))

    def record_row(
        self,
        row_id: int,
        output: Any,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        input_hash: str = "",
    ) -> None:
        """Buffer a completed row's output; later records of the same row and inputs are ignored."""
        if (row_id, input_hash) in self._done:
            return
        self._require_open()
        record = (row_id, "row", None, _dumps(output), input_tokens, output_tokens, input_hash)
        self._done.add((row_id, input_hash))
        self._state.nodes.get(row_id, {}).pop(input_hash, None)
        self._append(record)

    def record_failure(self, row_id: int, error: BaseException | ErrorInfo, *,
                       input_hash: str = "") -> None:
        """Buffer that a row failed: kept as type name, message and status, then retried.

        A failed row is not completed; the next run with this directory runs it again,
        reusing the nodes recorded for it.
        """
        if (row_id, input_hash) in self._done:
            return
        self._require_open()
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        self._append((row_id, "failed", None, _dumps(info), 0, 0, input_hash))

    def _require_open(self) -> None:
        if not self._open:
            raise CheckpointError(
                f"CheckpointStore for {self.directory} is not open (or already closed); call "
                "open() or use it as a context manager before recording."
            )

    def _append(self, record: Record) -> None:
        with self._lock:
            self._buffer.append(record)
        if self.auto_flush and self.flush_due:
            self.flush()

    @property
    def flush_due(self) -> bool:
        """Whether ``flush_every`` records are buffered or ``flush_interval`` has passed."""
        pending = len(self._buffer)
        return pending >= self.flush_every or (
            pending > 0 and self._clock() - self._last_flush >= self.flush_interval
        )

    def _take(self) -> tuple[list[Record], int, int]:
        with self._lock:
            batch, self._buffer = self._buffer, []
            self._last_flush = self._clock()
            if not batch:
                return batch, -1, 0
            seq = self._next_seq
            self._next_seq += 1
            # Stamped here, not when the file lands, so a writer's segments order by seq even
            # when concurrent aflush() writes finish out of order or the wall clock steps back.
            self._last_commit_ns = max(time.time_ns(), self._last_commit_ns + 1)
            return batch, seq, self._last_commit_ns

    def _write(self, batch: list[Record], seq: int, commit_ns: int) -> None:
        path = self.directory / segment_name(self.writer_id, seq)
        try:
            write_segment(path, batch, writer_id=self.writer_id, seq=seq, commit_ns=commit_ns,
                          checkpoint_id=self.manifest.checkpoint_id)
        except BaseException:
            # Keep the records for the next flush rather than losing them with the error.
            with self._lock:
                self._buffer[:0] = batch
            raise

    def flush(self) -> None:
        """Write the buffered records as one segment now (blocking; a no-op when empty)."""
        batch, seq, commit_ns = self._take()
        if batch:
            self._write(batch, seq, commit_ns)

    async def aflush(self) -> None:
        """Like :meth:`flush`, with the file write in a worker thread off the event loop."""
        batch, seq, commit_ns = self._take()
        if batch:
            await asyncio.to_thread(self._write, batch, seq, commit_ns)

    def close(self) -> None:
        """Flush what is buffered; further records raise. Safe to call twice."""
        if self._open:
            self.flush()
            self._open = False

    def __enter__(self) -> Self:
        return self if self._open else self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Flush even on error: what completed before the failure is exactly what resume needs.
        self.close()
