"""Atomic files and the Arrow segment format of a checkpoint directory.

A segment is one Arrow IPC file holding the records of one flush of one writer:

```
row_id int64 | kind string ("row", "node", "failed") | node_id string (null for rows)
value string (JSON from plait.serialize) | input_tokens int64 | output_tokens int64
input_hash string (hash of the row's inputs: a record serves only a row with equal inputs)
schema metadata: plait.format, plait.writer, plait.seq, plait.commit_ns, plait.checkpoint
                 (the manifest's checkpoint_id), plait.checksum (sha256 of the rest)
```

The checksum covers the record batch's bytes and the other metadata, so a segment that was
truncated, edited or copied in from another checkpoint directory is refused with a
``CheckpointError`` naming the file, never read as records.

Values are JSON text rather than nested Arrow types because node values have no common schema.
Files are uncompressed so a memory-mapped read of the id columns never touches the values.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait.errors import CheckpointError

# pyarrow ships no type stubs; its untyped API stays inside this module, behind typed functions.
pa: Any = importlib.import_module("pyarrow")
ipc: Any = importlib.import_module("pyarrow.ipc")

__all__ = [
    "FORMAT_VERSION",
    "SEGMENT_GLOB",
    "Segment",
    "atomic_write_bytes",
    "read_segment",
    "segment_name",
    "write_segment",
]

FORMAT_VERSION = 2
SEGMENT_GLOB = "part-*.arrow"
TEMP_GLOB = ".*.tmp-*"
_SEGMENT_RE = re.compile(r"^part-(?P<writer>[A-Za-z0-9_.-]+)-(?P<seq>\d+)\.arrow$")

SCHEMA: Any = pa.schema(
    [
        ("row_id", pa.int64()),
        ("kind", pa.string()),
        ("node_id", pa.string()),
        ("value", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("input_hash", pa.string()),
    ]
)

Record = tuple[int, str, str | None, str, int, int, str]
"""One buffered record, in SCHEMA's column order."""


def segment_name(writer_id: str, seq: int) -> str:
    """The file name of ``writer_id``'s ``seq``-th segment."""
    return f"part-{writer_id}-{seq:08d}.arrow"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    """``(writer_id, seq)`` of a segment file name, or None for other files."""
    match = _SEGMENT_RE.match(name)
    return (match["writer"], int(match["seq"])) if match else None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never part.

    The bytes go to a hidden temp file in the same directory (same filesystem, so the rename is
    atomic), are fsynced, and replace ``path``; the directory is fsynced so the rename survives
    a power loss. A crash leaves at most a ``.<name>.tmp-*`` file that readers never look at.
    """
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles (Windows): rename durability is the OS's
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def write_segment(
    path: Path,
    records: list[Record],
    *,
    writer_id: str,
    seq: int,
    commit_ns: int,
    checkpoint_id: str,
) -> None:
    """Write ``records`` as one Arrow IPC segment at ``path``, atomically.

    ``commit_ns`` orders segments across writers; each writer keeps it increasing with ``seq``.
    ``checkpoint_id`` ties the segment to its directory's manifest.
    """
    columns: list[Sequence[Any]] = list(zip(*records, strict=True)) if records else []
    metadata = {
        "plait.format": str(FORMAT_VERSION),
        "plait.writer": writer_id,
        "plait.seq": str(seq),
        "plait.commit_ns": str(commit_ns),
        "plait.checkpoint": checkpoint_id,
    }
    table = pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, SCHEMA, strict=True)]
        if records
        else [pa.array([], type=field.type) for field in SCHEMA],
        schema=SCHEMA,
    )
    metadata["plait.checksum"] = _checksum(table, metadata)
    schema = SCHEMA.with_metadata(metadata)
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, schema) as writer:
        writer.write_table(table)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _checksum(table: Any, metadata: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != "plait.checksum"},
                             sort_keys=True).encode())
    for batch in table.combine_chunks().to_batches():
        digest.update(batch.serialize().to_pybytes())
    return digest.hexdigest()


@dataclass(slots=True)
class Segment:
    """One committed segment; its columns are read (memory-mapped) only when asked for.

    No file stays open between reads, so a directory of many segments cannot exhaust file
    descriptors.

    Attributes:
        path: The file.
        writer_id: Who wrote it.
        seq: The writer's sequence number.
        commit_ns: Wall-clock time of the write; orders segments across writers.
        checkpoint_id: The manifest id the segment was written for.
    """

    path: Path
    writer_id: str
    seq: int
    commit_ns: int
    checkpoint_id: str = ""

    def column(self, name: str) -> list[Any]:
        """One column as Python values."""
        return _read_table(self.path).column(name).to_pylist()

    def take(self, names: Sequence[str], positions: Sequence[int]) -> list[list[Any]]:
        """The values of columns ``names`` at ``positions``, one list per column."""
        picked = _read_table(self.path).select(list(names)).take(list(positions))
        return [picked.column(name).to_pylist() for name in names]

    @property
    def order(self) -> tuple[int, str, int]:
        """Sort key: earlier commits first, so "first committed wins" on duplicates."""
        return (self.commit_ns, self.writer_id, self.seq)


def read_segment(path: Path, checkpoint_id: str | None = None) -> Segment:
    """Open the segment at ``path`` and verify its checksum.

    Args:
        path: The segment file.
        checkpoint_id: The directory's manifest id; a segment of another checkpoint is
            refused. None accepts any (adopting orphan segments).

    Raises:
        CheckpointError: The file is not a readable segment of a known format version, its
            checksum does not match, or it belongs to another checkpoint.
    """
    parsed = parse_segment_name(path.name)
    choices = (f"Delete {path.name} to drop its records (those rows run again), or rerun "
               "with resume='fresh' to start the checkpoint over.")
    try:
        table = _read_table(path)
        raw_meta: dict[bytes, bytes] = table.schema.metadata or {}
        meta = {key.decode(): value.decode() for key, value in raw_meta.items()}
        version = int(meta.get("plait.format", "0"))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CheckpointError(
            f"Checkpoint segment {path} cannot be read ({type(exc).__name__}: {exc}). Segments "
            f"are written atomically, so something else truncated or changed it. {choices}"
        ) from None
    if version != FORMAT_VERSION or parsed is None:
        raise CheckpointError(
            f"Checkpoint segment {path} has format version {version}; this plait reads "
            f"version {FORMAT_VERSION}. Use the plait version that wrote it, or "
            "resume='fresh'."
        )
    if table.schema.remove_metadata() != SCHEMA or meta.get("plait.checksum") != _checksum(
        table, meta
    ):
        raise CheckpointError(
            f"Checkpoint segment {path} fails its checksum: its records were changed after "
            f"plait wrote them, so none of them is used. {choices}"
        )
    owner = meta.get("plait.checkpoint", "")
    if checkpoint_id is not None and owner != checkpoint_id:
        raise CheckpointError(
            f"Checkpoint segment {path} belongs to another checkpoint (id {owner or 'none'}; "
            f"this directory's manifest.json has {checkpoint_id}): it was copied in or left "
            f"from another run, and its rows are not adopted. {choices}"
        )
    writer_id, seq = parsed
    try:
        commit_ns = int(meta.get("plait.commit_ns", "0"))
    except ValueError:
        commit_ns = 0
    return Segment(path, writer_id, seq, commit_ns, owner)


def _read_table(path: Path) -> Any:
    # The table's buffers keep the mapping alive after the file is closed; pages are read
    # only for the columns that are touched.
    with pa.memory_map(str(path), "r") as source:
        return ipc.open_file(source).read_all()
