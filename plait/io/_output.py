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
(key ``plait.part``) its counts (rows, errors, tokens), its row range, the id of the output
directory it was written for (``output_id`` in the manifest) and a sha256 of its data pages
and of those fields, so a resumed run can total the output without reading the data, and a
part that was truncated, edited, renamed or copied in from another output is refused with a
``CheckpointError`` naming it, never adopted (the driver verifies every part before a run,
``read_output`` before reading). Files starting with ``_`` or ``.`` are ignored by Parquet
readers (``pyarrow.dataset``, Spark, Ray Data), so ``pq.read_table(directory)`` reads the rows.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

from plait.errors import CheckpointError
from plait.io._arrow import Table, pa, pq
from plait.io._parts import PART_RE, ChunkStats, PartInfo, read_part_info, write_part_file

__all__ = [
    "MANIFEST_NAME",
    "ChunkStats",
    "OutputDir",
    "ResumeMode",
    "iter_uncommitted",
    "read_output",
]

FORMAT_VERSION = 2
_MANIFEST = "_plait_dataset.json"
MANIFEST_NAME = _MANIFEST

ResumeMode = Literal["auto", "force", "fresh"]



class OutputDir:
    """One run's output directory (see the module docstring for the layout).

    Args:
        path: The directory; created by ``prepare``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.output_id = ""

    # -- manifest and resume ------------------------------------------------------------------
    def prepare(self, pipeline_hash: str, source: str, resume: ResumeMode,
                total: int | None = None) -> None:
        """Create the directory, or check it belongs to this pipeline and source.

        Every committed part is verified (checksum, owner, row range), so a run never adopts
        a damaged or foreign part.

        Args:
            pipeline_hash: Hash of the pipeline (graph, prompts, LLM settings).
            source: A description of the source (paths and sizes, or a content hash).
            resume: "auto" resumes only a matching output, "force" resumes any, "fresh"
                deletes the committed parts first.
            total: Rows in the source, when known: a part holding rows past it is refused.

        Raises:
            CheckpointError: With "auto", the directory holds another pipeline's or source's
                output, or parts without a manifest; in any mode, the manifest or a part is
                damaged or belongs to another output.
        """
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(
                f"The output {self.path} is a file, not a directory. Pass a directory path "
                "(created if missing) for the Parquet parts."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / _MANIFEST
        if resume == "fresh":
            self._delete_parts()
            manifest.unlink(missing_ok=True)
        old = _read_manifest(manifest)
        parts = self.part_paths()
        if old is None:
            self.output_id = self._orphan_owner(parts, resume) or secrets.token_hex(8)
        else:
            self.output_id = old["output_id"]
            changed = [name for name, new in (("pipeline", pipeline_hash), ("source", source))
                       if old.get(name) != new]
            if changed and resume == "auto" and parts:
                raise CheckpointError(
                    f"The output directory {self.path} holds results of a different "
                    f"{' and '.join(changed)} ({', '.join(f'{n}: {old.get(n)!r}' for n in changed)}"
                    "). Pass resume='force' (CLI: --resume force) to keep them and add the "
                    "missing rows, resume='fresh' to delete them and start over, or choose "
                    "another output directory."
                )
        self.verify_parts(total)
        self._clean_temp_files()
        data = {"pipeline": pipeline_hash, "source": source, "format_version": FORMAT_VERSION,
                "output_id": self.output_id}
        _atomic_write(manifest, json.dumps(data, indent=2).encode())

    def _orphan_owner(self, parts: list[Path], resume: ResumeMode) -> str | None:
        if not parts:
            return None
        if resume != "force":
            raise CheckpointError(
                f"The output directory {self.path} has {len(parts)} part files (e.g. "
                f"{parts[0].name}) but no {_MANIFEST}, so it is unknown which run wrote them. "
                "Pass resume='fresh' to delete them and start over, resume='force' to adopt "
                "them (their checksums are still verified), or choose another output directory."
            )
        owners = {read_part_info(path, None).output_id for path in parts}
        if len(owners) != 1:
            raise CheckpointError(
                f"The output directory {self.path} has no {_MANIFEST} and its parts come from "
                f"{len(owners)} different outputs, so they cannot be adopted together. Pass "
                "resume='fresh' to delete them, or keep only one output's part files."
            )
        return owners.pop()

    def verify_parts(self, total: int | None = None) -> list[PartInfo]:
        """Check every committed part: checksum, owner, name, no overlap, within ``total``.

        Raises:
            CheckpointError: Naming the first bad part and what to do.
        """
        infos = [read_part_info(path, self.output_id or None) for path in self.part_paths()]
        previous: PartInfo | None = None
        for info in infos:
            if previous is not None and info.start < previous.end:
                raise CheckpointError(
                    f"Output parts {previous.path.name} and {info.path.name} in {self.path} "
                    "overlap, so some rows would appear twice. Delete the stray one (or rerun "
                    "with resume='fresh' to start over)."
                )
            if total is not None and info.end > total:
                raise CheckpointError(
                    f"Output part {info.path} holds rows {info.start}-{info.end - 1}, but the "
                    f"source has {total} rows: it was left by another run. Delete it (or rerun "
                    "with resume='fresh' to start over)."
                )
            previous = info
        return infos

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
        return sorted(p for p in self.path.iterdir() if PART_RE.match(p.name))

    def part_path(self, start: int, end: int) -> Path:
        """Where the part of rows [start, end) goes."""
        return self.path / f"part-{start:012d}-{end:012d}.parquet"

    def committed_ranges(self) -> list[tuple[int, int]]:
        """Row ranges [start, end) already committed, sorted and merged."""
        ranges: list[tuple[int, int]] = []
        for path in self.part_paths():
            match = PART_RE.match(path.name)
            if match is not None:
                ranges.append((int(match[1]), int(match[2])))
        return _merge(sorted(ranges))

    def is_committed(self, start: int, end: int) -> bool:
        """True when the part of exactly [start, end) exists."""
        return self.part_path(start, end).exists()

    def write_part(self, start: int, end: int, table: Table, stats: ChunkStats) -> Path:
        """Commit rows [start, end) atomically, with ``stats`` and a checksum in the footer."""
        if not self.output_id:
            self.output_id = _read_manifest_id(self.path / _MANIFEST)
        final = self.part_path(start, end)
        write_part_file(final, start, end, table, stats, self.output_id)
        _fsync_dir(self.path)
        return final

    def part_stats(self, path: Path) -> ChunkStats:
        """The counts stored in one part's footer."""
        return read_part_info(path, None, verify=False).stats

    def committed_stats(self) -> ChunkStats:
        """The counts of every committed part (footers only, no data read)."""
        total = ChunkStats()
        for path in self.part_paths():
            total.add(self.part_stats(path))
        return total


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        raw: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"Output manifest {path} cannot be read ({type(exc).__name__}: {exc}). "
            f"{_MANIFEST_CHOICES}"
        ) from None
    manifest: dict[str, Any] = (
        cast("dict[str, Any]", raw) if isinstance(raw, dict) else {})
    output_id = manifest.get("output_id")
    if manifest.get("format_version") != FORMAT_VERSION or not (
            isinstance(output_id, str) and output_id):
        raise CheckpointError(
            f"Output manifest {path} is not a plait manifest of format version "
            f"{FORMAT_VERSION} (format_version {manifest.get('format_version')!r}). "
            f"{_MANIFEST_CHOICES}"
        )
    return manifest


def _read_manifest_id(path: Path) -> str:
    manifest = _read_manifest(path)
    if manifest is None:
        raise CheckpointError(
            f"Output manifest {path} is missing while parts are being written; the driver "
            "creates it before any worker starts. Rerun the job."
        )
    return str(manifest["output_id"])


_MANIFEST_CHOICES = (
    "Rerun with resume='fresh' to delete the output's parts and start over, delete the "
    "manifest and rerun with resume='force' to adopt the parts (their checksums are still "
    "verified), or choose another output directory."
)


def read_output(path: str | os.PathLike[str]) -> Table:
    """Read a dataset run's output as one table, sorted by ``row_id``.

    Parts may disagree on a column's type when one chunk had only nulls in it (every row
    failed); their schemas are unified permissively (null widens to the other type).

    Raises:
        CheckpointError: A part is damaged, overlaps another, or belongs to another output.

    Example:
        >>> table = read_output("out/")  # doctest: +SKIP
        >>> table.column("output").to_pylist()[:3]  # doctest: +SKIP
    """
    out = OutputDir(path)
    manifest = _read_manifest(out.path / _MANIFEST)
    out.output_id = str(manifest["output_id"]) if manifest is not None else ""
    tables = [pq.read_table(info.path) for info in out.verify_parts()]
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
