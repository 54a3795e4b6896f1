"""Atomic files and the Arrow segment format of a checkpoint directory.

A segment is one Arrow IPC file holding the records of one flush of one writer:

```
row_id int64 | kind string ("row", "node", "failed") | node_id string (null for rows)
value string (JSON from plait.serialize) | input_tokens int64 | output_tokens int64
schema metadata: plait.format, plait.writer, plait.seq, plait.commit_ns
```

Values are JSON text rather than nested Arrow types because node values have no common schema.
Files are uncompressed so a memory-mapped read of the id columns never touches the values.
"""

from __future__ import annotations

import importlib
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

FORMAT_VERSION = 1
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
    ]
)

Record = tuple[int, str, str | None, str, int, int]
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
    path: Path, records: list[Record], *, writer_id: str, seq: int, commit_ns: int
) -> None:
    """Write ``records`` as one Arrow IPC segment at ``path``, atomically.

    ``commit_ns`` orders segments across writers; each writer keeps it increasing with ``seq``.
    """
    columns: list[Sequence[Any]] = list(zip(*records, strict=True)) if records else []
    metadata = {
        "plait.format": str(FORMAT_VERSION),
        "plait.writer": writer_id,
        "plait.seq": str(seq),
        "plait.commit_ns": str(commit_ns),
    }
    schema = SCHEMA.with_metadata(metadata)
    table = pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, SCHEMA, strict=True)]
        if records
        else [pa.array([], type=field.type) for field in SCHEMA],
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, schema) as writer:
        writer.write_table(table)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


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
    """

    path: Path
    writer_id: str
    seq: int
    commit_ns: int

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


def read_segment(path: Path) -> Segment:
    """Open the segment at ``path``.

    Raises:
        CheckpointError: The file is not a readable segment of a known format version.
    """
    parsed = parse_segment_name(path.name)
    try:
        table = _read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CheckpointError(
            f"Checkpoint segment {path} cannot be read ({exc}). Segments are written "
            "atomically, so something else changed it; delete that file to drop its records, "
            "or rerun with resume='fresh'."
        ) from exc
    raw_meta: dict[bytes, bytes] = table.schema.metadata or {}
    meta = {key.decode(): value.decode() for key, value in raw_meta.items()}
    version = int(meta.get("plait.format", "0"))
    if version != FORMAT_VERSION or parsed is None:
        raise CheckpointError(
            f"Checkpoint segment {path} has format version {version}; this plait reads "
            f"version {FORMAT_VERSION}. Use the plait version that wrote it, or "
            "resume='fresh'."
        )
    writer_id, seq = parsed
    return Segment(path, writer_id, seq, int(meta.get("plait.commit_ns", "0")))


def _read_table(path: Path) -> Any:
    # The table's buffers keep the mapping alive after the file is closed; pages are read
    # only for the columns that are touched.
    with pa.memory_map(str(path), "r") as source:
        return ipc.open_file(source).read_all()
