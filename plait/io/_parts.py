"""One committed part file of a dataset output: its footer fields and checksum.

A part's Parquet footer carries, under the key ``plait.part``, its counts, its row range
``[start, end)``, the ``output_id`` of the directory it was written for, and ``sha256``: a
hash of every byte before the footer (the data pages) and of those fields. The hash is
computed while the file is written (the writer tees its bytes), so verifying a part reads it
once and never decodes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

from plait.errors import CheckpointError
from plait.io._arrow import Table, pa, pq

__all__ = ["PART_RE", "ChunkStats", "PartInfo", "read_part_info", "write_part_file"]

PART_RE = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")
_META_KEY = "plait.part"


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



def write_part_file(final: Path, start: int, end: int, table: Table, stats: ChunkStats,
                    output_id: str) -> None:
    """Write rows [start, end) to ``final`` atomically (temp file, fsync, rename)."""
    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
    fields_ = {**asdict(stats), "start": start, "end": end, "output_id": output_id}
    fields_.pop("skipped", None)
    try:
        with tmp.open("wb") as f:
            tee = _HashingWriter(f)
            writer = pq.ParquetWriter(tee, table.schema)
            writer.write_table(table)
            # Everything before the footer is written: the checksum covers those bytes and
            # the fields, and goes into the footer itself.
            fields_["sha256"] = _digest(tee.digest, fields_)
            writer.add_key_value_metadata({_META_KEY: json.dumps(fields_, sort_keys=True)})
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class PartInfo:
    """What a part's footer says about it.

    Attributes:
        path: The part file.
        start: First row id.
        end: Row id after the last row.
        output_id: The output directory it was written for.
        stats: Its counts.
    """

    path: Path
    start: int
    end: int
    output_id: str
    stats: ChunkStats


_STAT_FIELDS = tuple(f.name for f in fields(ChunkStats) if f.name != "skipped")


def read_part_info(path: Path, output_id: str | None, *, verify: bool = True) -> PartInfo:
    """Read (and by default verify) one part's footer.

    Args:
        path: The part file.
        output_id: The directory's id; a part of another output is refused (None: any).
        verify: Check the checksum (reads the whole file).

    Raises:
        CheckpointError: The part is unreadable, fails its checksum, does not match its name,
            or belongs to another output; the message names it and the choices.
    """
    choices = (f"Delete {path.name} (its rows run again), or rerun with resume='fresh' to "
               "start the output over.")
    try:
        meta: dict[bytes, bytes] = pq.read_metadata(path).metadata or {}
        raw = meta.get(_META_KEY.encode())
        if raw is None:
            raise ValueError(f"no {_META_KEY} footer: not written by this plait")
        fields_: dict[str, Any] = json.loads(raw)
        name = PART_RE.match(path.name)
        start, end = int(fields_["start"]), int(fields_["end"])
        rows, errors, tokens_in, tokens_out = (int(fields_[key]) for key in _STAT_FIELDS)
        stats = ChunkStats(rows, errors, tokens_in, tokens_out)
        owner = str(fields_["output_id"])
        data_digest = ""
        if verify:
            with path.open("rb") as f:
                data_digest = _hash_before_footer(f)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise CheckpointError(
            f"Output part {path} cannot be used ({type(exc).__name__}: {exc}). {choices}"
        ) from None
    if verify:
        claimed = fields_.get("sha256")
        unsigned = {k: v for k, v in fields_.items() if k != "sha256"}
        if claimed != _digest(data_digest, unsigned) or name is None or (
                (int(name[1]), int(name[2])) != (start, end)):
            raise CheckpointError(
                f"Output part {path} fails its checksum: it was changed or renamed after "
                f"plait wrote it, so its rows are not used. {choices}"
            )
    if output_id is not None and owner != output_id:
        raise CheckpointError(
            f"Output part {path} belongs to another output (id {owner}; this directory's "
            f"_plait_dataset.json has {output_id}): it was copied in or left from another "
            f"run, and its rows are not adopted. {choices}"
        )
    return PartInfo(path, start, end, owner, stats)


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through it."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self._hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._file.write(view)
        return view.nbytes

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()


def _hash_before_footer(f: BinaryIO) -> str:
    # Parquet ends with: footer, 4-byte footer length, "PAR1".
    size = f.seek(0, os.SEEK_END)
    if size < 12:
        raise ValueError("file too short to be Parquet")
    f.seek(size - 8)
    tail = f.read(8)
    if tail[4:] != b"PAR1":
        raise ValueError("no Parquet footer (truncated?)")
    remaining = size - 8 - int.from_bytes(tail[:4], "little")
    if remaining < 4:
        raise ValueError("Parquet footer length is out of range")
    f.seek(0)
    digest = hashlib.sha256()
    while remaining > 0:
        block = f.read(min(remaining, 1 << 20))
        if not block:
            raise ValueError("file shorter than its footer says")
        digest.update(block)
        remaining -= len(block)
    return digest.hexdigest()


def _digest(data_digest: str, fields_: dict[str, Any]) -> str:
    return hashlib.sha256(
        (data_digest + json.dumps(fields_, sort_keys=True)).encode()).hexdigest()


