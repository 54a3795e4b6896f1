"""What the committed segments of a checkpoint directory add up to.

Loading keeps an index (row id -> input hash -> segment and position) rather than the values,
so memory grows with the number of completed rows, not with the size of their outputs; outputs
are read from the memory-mapped segments when asked for. Node values are kept (as JSON text)
only for rows that are not done, since those are the ones a resumed run needs.

Every record carries the hash of its row's inputs (:func:`~plait.checkpoint.row_hash`); a
record serves a row only when the row's current inputs hash the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.checkpoint._files import SEGMENT_GLOB, Segment, read_segment
from plait.errors import CheckpointError
from plait.serialize import ErrorInfo, ModelRegistry, from_jsonable

__all__ = ["CheckpointState", "RowRecord", "load_state"]


@dataclass(frozen=True, slots=True)
class RowRecord:
    """A completed row as stored.

    Attributes:
        row_id: The row's id (its index in the run's inputs).
        output: The row's output, rebuilt by :func:`plait.serialize.from_jsonable`.
        input_tokens: Prompt tokens the row used.
        output_tokens: Completion tokens the row used.
    """

    row_id: int
    output: Any
    input_tokens: int = 0
    output_tokens: int = 0


Location = tuple[int, int]
"""(index into CheckpointState.segments, position in that segment's table)."""


@dataclass(slots=True)
class CheckpointState:
    """The de-duplicated content of the segments that existed when it was loaded.

    Attributes:
        segments: Segments in commit order (earliest first).
        done: Row id -> input hash -> location of the first committed "row" record for those
            inputs. The last key is the most recently completed version of the row.
        failed: Row id -> (input hash, location) of its latest "failed" record.
        nodes: Row id -> input hash -> node id -> (value JSON, segment index), first
            committed, for rows whose inputs are not done.
        models: The pydantic classes values may be rebuilt as.
    """

    segments: list[Segment] = field(default_factory=list[Segment])
    done: dict[int, dict[str, Location]] = field(default_factory=dict[int, dict[str, Location]])
    failed: dict[int, tuple[str, Location]] = field(
        default_factory=dict[int, tuple[str, Location]])
    nodes: dict[int, dict[str, dict[str, tuple[str, int]]]] = field(
        default_factory=dict[int, dict[str, dict[str, tuple[str, int]]]])
    models: ModelRegistry = field(default_factory=dict[str, Any])

    def known_hashes(self, row_id: int) -> set[str]:
        """Input hashes the checkpoint holds any record of ``row_id`` for."""
        hashes = set(self.done.get(row_id, ()))
        hashes.update(self.nodes.get(row_id, ()))
        if row_id in self.failed:
            hashes.add(self.failed[row_id][0])
        return hashes

    def iter_rows(self, wanted: Iterable[tuple[int, Location]] | None = None
                  ) -> Iterator[RowRecord]:
        """Yield completed rows, reading one segment at a time.

        Args:
            wanted: (row id, location) pairs to read; None reads the latest completed version
                of every row.
        """
        if wanted is None:
            wanted = ((row_id, next(reversed(versions.values())))
                      for row_id, versions in self.done.items())
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for row_id, (index, position) in wanted:
            by_segment.setdefault(index, []).append((row_id, position))
        for index, picked in sorted(by_segment.items()):
            segment = self.segments[index]
            positions = [position for _, position in picked]
            values, inputs, outputs = segment.take(
                ["value", "input_tokens", "output_tokens"], positions
            )
            for (row_id, _), value, tokens_in, tokens_out in zip(
                picked, values, inputs, outputs, strict=True
            ):
                yield RowRecord(row_id, self.decode(value, segment.path), tokens_in or 0,
                                tokens_out or 0)

    def read_failures(self) -> dict[int, ErrorInfo]:
        """The stored error of every failed (and not since completed) row."""
        failures: dict[int, ErrorInfo] = {}
        for row_id, (_, (index, position)) in self.failed.items():
            segment = self.segments[index]
            (value,) = segment.take(["value"], [position])[0]
            decoded = self.decode(value, segment.path)
            failures[row_id] = (
                decoded if isinstance(decoded, ErrorInfo) else ErrorInfo("Error", str(decoded))
            )
        return failures

    def node_values(self, row_id: int, input_hash: str) -> dict[str, Any]:
        """Node id -> restored value of the stored nodes of a row's inputs."""
        stored = self.nodes.get(row_id, {}).get(input_hash, {})
        return {node_id: self.decode(text, self.segments[index].path)
                for node_id, (text, index) in stored.items()}

    def decode(self, text: str | None, path: Path) -> Any:
        """A stored value, rebuilt; a value that is not plait's JSON names its file."""
        if text is None:
            return None
        try:
            return from_jsonable(json.loads(text), self.models)
        except (ValueError, CheckpointError) as exc:
            raise CheckpointError(
                f"Checkpoint segment {path} holds a value that cannot be restored: {exc} "
                f"Delete {path.name} to drop its records (those rows run again), or rerun with "
                "resume='fresh' to start the checkpoint over."
            ) from None


def load_state(directory: Path, checkpoint_id: str | None = None,
               models: ModelRegistry | None = None) -> CheckpointState:
    """Read every committed segment of ``directory`` and de-duplicate their records.

    Duplicates (a row redone after a writer crashed having already committed it) resolve to
    the first committed record for the same inputs. Temp files of interrupted writes are
    never matched.

    Raises:
        CheckpointError: A segment is unreadable, fails its checksum, or belongs to another
            checkpoint (see :func:`~plait.checkpoint._files.read_segment`).
    """
    segments = sorted((read_segment(path, checkpoint_id)
                       for path in directory.glob(SEGMENT_GLOB)),
                      key=lambda segment: segment.order)
    state = CheckpointState(segments=segments, models=models or {})
    for index, segment in enumerate(segments):
        row_ids = segment.column("row_id")
        kinds = segment.column("kind")
        hashes = segment.column("input_hash")
        for position, (row_id, kind, digest) in enumerate(
                zip(row_ids, kinds, hashes, strict=True)):
            if kind == "row":
                state.done.setdefault(row_id, {}).setdefault(digest or "", (index, position))
            elif kind == "failed":
                state.failed[row_id] = (digest or "", (index, position))
    for row_id in list(state.failed):
        if state.failed[row_id][0] in state.done.get(row_id, {}):
            del state.failed[row_id]
    # Second pass so node values of completed rows are never materialized.
    for index, segment in enumerate(segments):
        _collect_nodes(index, segment, state)
    return state


def _collect_nodes(index: int, segment: Segment, state: CheckpointState) -> None:
    row_ids = segment.column("row_id")
    kinds = segment.column("kind")
    hashes = segment.column("input_hash")
    positions = [
        position
        for position, (row_id, kind, digest) in enumerate(zip(row_ids, kinds, hashes, strict=True))
        if kind == "node" and (digest or "") not in state.done.get(row_id, {})
    ]
    if not positions:
        return
    picked_ids, node_ids, values, picked_hashes = segment.take(
        ["row_id", "node_id", "value", "input_hash"], positions)
    for row_id, node_id, value, digest in zip(picked_ids, node_ids, values, picked_hashes,
                                              strict=True):
        by_node = state.nodes.setdefault(row_id, {}).setdefault(digest or "", {})
        by_node.setdefault(node_id, (value, index))
