"""The output directory of a dataset run: committed Parquet parts named by row range.

Layout:

```
_plait_dataset.json                      manifest: pipeline hash, source, format version
part-<first row>-<end row>.parquet       one committed chunk: rows [first, end) of the source
.part-...parquet.tmp-<random>            a write in progress or interrupted; never read
```

A chunk is committed when its part file exists: it is written to a temp file in the same
directory, fsynced, and renamed (``os.replace`` is atomic), so a process killed mid-write
leaves no partial part. Part names are a pure function of the row range, so a chunk written
twice (a worker that died after committing, then redone elsewhere) replaces itself instead of
duplicating rows; a rerun skips every row inside a committed range. Each part's footer carries
its counts (rows, errors, tokens) under the key ``plait``, so a resumed run can total the
output without reading the data. Files starting with ``_`` or ``.`` are ignored by Parquet
readers (``pyarrow.dataset``, Spark, Ray Data), so ``pq.read_table(directory)`` reads the rows.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from plait.errors import CheckpointError
from plait.io._arrow import Table, pa, pq

__all__ = [
    "ChunkStats",
    "OutputDir",
    "ResumeMode",
    "iter_uncommitted",
    "read_output",
]

FORMAT_VERSION = 1
_MANIFEST = "_plait_dataset.json"
_PART_RE = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")
_META_KEY = b"plait"

ResumeMode = Literal["auto", "force", "fresh"]


@dataclass
class ChunkStats:
    """Counts of one committed chunk (also stored in its part's footer).

    Attributes:
        rows: Rows in the chunk.
        errors: Rows whose ``error`` is set.
        input_tokens: Input tokens of the chunk's rows.
        output_tokens: Output tokens of the chunk's rows.
        skipped: True when the chunk was already committed and not run again.
    """

    rows: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    skipped: bool = False

    def add(self, other: ChunkStats) -> None:
        """Add ``other``'s counts to these."""
        self.rows += other.rows
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens


class OutputDir:
    """One run's output directory (see the module docstring for the layout).

    Args:
        path: The directory; created by ``prepare``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- manifest and resume ------------------------------------------------------------------
    def prepare(self, pipeline_hash: str, source: str, resume: ResumeMode) -> None:
        """Create the directory, or check it belongs to this pipeline and source.

        Args:
            pipeline_hash: Hash of the pipeline (graph, prompts, LLM settings).
            source: A description of the source (paths and sizes, or a content hash).
            resume: "auto" resumes only a matching output, "force" resumes any, "fresh"
                deletes the committed parts first.

        Raises:
            CheckpointError: With "auto", the directory holds another pipeline's or source's
                output.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / _MANIFEST
        if resume == "fresh":
            self._delete_parts()
        elif manifest.exists():
            old = json.loads(manifest.read_text())
            changed = [name for name, new in (("pipeline", pipeline_hash), ("source", source))
                       if old.get(name) != new]
            if changed and resume == "auto" and self.part_paths():
                raise CheckpointError(
                    f"The output directory {self.path} holds results of a different "
                    f"{' and '.join(changed)} ({', '.join(f'{n}: {old.get(n)!r}' for n in changed)}"
                    "). Pass resume='force' (CLI: --resume force) to keep them and add the "
                    "missing rows, resume='fresh' to delete them and start over, or choose "
                    "another output directory."
                )
        self._clean_temp_files()
        data = {"pipeline": pipeline_hash, "source": source, "format_version": FORMAT_VERSION}
        _atomic_write(manifest, json.dumps(data, indent=2).encode())

    def _delete_parts(self) -> None:
        for path in self.part_paths():
            path.unlink(missing_ok=True)

    def _clean_temp_files(self) -> None:
        # Only the driver calls this, before any worker starts, so no live write is removed.
        for path in self.path.glob(".part-*.tmp-*"):
            path.unlink(missing_ok=True)

    # -- parts ------------------------------------------------------------------------------
    def part_paths(self) -> list[Path]:
        """Every committed part file, in row order."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if _PART_RE.match(p.name))

    def part_path(self, start: int, end: int) -> Path:
        """Where the part of rows [start, end) goes."""
        return self.path / f"part-{start:012d}-{end:012d}.parquet"

    def committed_ranges(self) -> list[tuple[int, int]]:
        """Row ranges [start, end) already committed, sorted and merged."""
        ranges: list[tuple[int, int]] = []
        for path in self.part_paths():
            match = _PART_RE.match(path.name)
            if match is not None:
                ranges.append((int(match[1]), int(match[2])))
        return _merge(sorted(ranges))

    def is_committed(self, start: int, end: int) -> bool:
        """True when the part of exactly [start, end) exists."""
        return self.part_path(start, end).exists()

    def write_part(self, start: int, end: int, table: Table, stats: ChunkStats) -> Path:
        """Commit rows [start, end) atomically, with ``stats`` in the footer."""
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps(asdict(stats)).encode()
        table = table.replace_schema_metadata(meta)
        final = self.part_path(start, end)
        tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
        try:
            with tmp.open("wb") as f:
                pq.write_table(table, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path)
        return final

    def part_stats(self, path: Path) -> ChunkStats:
        """The counts stored in one part's footer."""
        meta: dict[bytes, bytes] = pq.read_schema(path).metadata or {}
        raw = meta.get(_META_KEY)
        if raw is None:
            return ChunkStats(rows=pq.read_metadata(path).num_rows)
        return ChunkStats(**json.loads(raw))

    def committed_stats(self) -> ChunkStats:
        """The counts of every committed part (footers only, no data read)."""
        total = ChunkStats()
        for path in self.part_paths():
            total.add(self.part_stats(path))
        return total


def read_output(path: str | os.PathLike[str]) -> Table:
    """Read a dataset run's output as one table, sorted by ``row_id``.

    Parts may disagree on a column's type when one chunk had only nulls in it (every row
    failed); their schemas are unified permissively (null widens to the other type).

    Example:
        >>> table = read_output("out/")  # doctest: +SKIP
        >>> table.column("output").to_pylist()[:3]  # doctest: +SKIP
    """
    tables = [pq.read_table(p) for p in OutputDir(path).part_paths()]
    if not tables:
        return pa.table({})
    schema = pa.unify_schemas([t.schema.remove_metadata() for t in tables],
                              promote_options="permissive")
    tables = [t.replace_schema_metadata(None) for t in tables]
    combined = pa.concat_tables([t.cast(schema) if t.schema != schema else t for t in tables])
    return combined.sort_by("row_id")


def iter_uncommitted(ranges: list[tuple[int, int]], start: int, end: int
                     ) -> Iterator[tuple[int, int]]:
    """Sub-ranges of [start, end) not covered by the sorted, merged ``ranges``."""
    cursor = start
    for lo, hi in ranges:
        if hi <= cursor:
            continue
        if lo >= end:
            break
        if lo > cursor:
            yield cursor, min(lo, end)
        cursor = max(cursor, hi)
        if cursor >= end:
            return
    if cursor < end:
        yield cursor, end


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
