"""What the committed segments of a checkpoint directory add up to.

Loading keeps an index (row id -> segment and position) rather than the values, so memory
grows with the number of completed rows, not with the size of their outputs; outputs are read
from the memory-mapped segments when asked for. Node values are kept (as JSON text) only for
rows that are not done, since those are the ones a resumed run needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.checkpoint._files import SEGMENT_GLOB, Segment, read_segment
from plait.serialize import ErrorInfo, from_jsonable

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
        done: Row id -> location of its first committed "row" record.
        failed: Row id -> location of its latest "failed" record, for rows not done.
        nodes: Row id -> node id -> value JSON, first committed, for rows not done.
    """

    segments: list[Segment] = field(default_factory=list[Segment])
    done: dict[int, Location] = field(default_factory=dict[int, Location])
    failed: dict[int, Location] = field(default_factory=dict[int, Location])
    nodes: dict[int, dict[str, str]] = field(default_factory=dict[int, dict[str, str]])

    def iter_rows(self) -> Iterator[RowRecord]:
        """Yield every completed row, reading one segment at a time."""
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for row_id, (index, position) in self.done.items():
            by_segment.setdefault(index, []).append((row_id, position))
        for index, wanted in sorted(by_segment.items()):
            positions = [position for _, position in wanted]
            values, inputs, outputs = self.segments[index].take(
                ["value", "input_tokens", "output_tokens"], positions
            )
            for (row_id, _), value, tokens_in, tokens_out in zip(
                wanted, values, inputs, outputs, strict=True
            ):
                yield RowRecord(row_id, _decode(value), tokens_in or 0, tokens_out or 0)

    def read_failures(self) -> dict[int, ErrorInfo]:
        """The stored error of every failed (and not since completed) row."""
        failures: dict[int, ErrorInfo] = {}
        for row_id, (index, position) in self.failed.items():
            (value,) = self.segments[index].take(["value"], [position])[0]
            decoded = _decode(value)
            failures[row_id] = (
                decoded if isinstance(decoded, ErrorInfo) else ErrorInfo("Error", str(decoded))
            )
        return failures


def _decode(text: str | None) -> Any:
    return None if text is None else from_jsonable(json.loads(text))


def load_state(directory: Path) -> CheckpointState:
    """Read every committed segment of ``directory`` and de-duplicate their records.

    Duplicates (a row redone after a writer crashed having already committed it) resolve to
    the first committed record. Temp files of interrupted writes are never matched.
    """
    segments = sorted((read_segment(path) for path in directory.glob(SEGMENT_GLOB)),
                      key=lambda segment: segment.order)
    state = CheckpointState(segments=segments)
    for index, segment in enumerate(segments):
        row_ids = segment.column("row_id")
        kinds = segment.column("kind")
        for position, (row_id, kind) in enumerate(zip(row_ids, kinds, strict=True)):
            if kind == "row":
                state.done.setdefault(row_id, (index, position))
            elif kind == "failed":
                state.failed[row_id] = (index, position)
    for row_id in state.done.keys() & state.failed.keys():
        del state.failed[row_id]
    # Second pass so node values of completed rows are never materialized.
    for segment in segments:
        _collect_nodes(segment, state)
    return state


def _collect_nodes(segment: Segment, state: CheckpointState) -> None:
    row_ids = segment.column("row_id")
    kinds = segment.column("kind")
    positions = [
        position
        for position, (row_id, kind) in enumerate(zip(row_ids, kinds, strict=True))
        if kind == "node" and row_id not in state.done
    ]
    if not positions:
        return
    picked_ids, node_ids, values = segment.take(["row_id", "node_id", "value"], positions)
    for row_id, node_id, value in zip(picked_ids, node_ids, values, strict=True):
        state.nodes.setdefault(row_id, {}).setdefault(node_id, value)
