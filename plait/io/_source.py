"""Reading a dataset source lazily, as chunks of contiguous rows.

A source is a Parquet, CSV or JSON-lines path (a file or a directory of them) or a list of
dicts (``plait_ray`` adds ``ray.data.Dataset``). Files are scanned batch by batch with
``pyarrow.dataset``, so memory holds one batch plus the chunks in flight, never the dataset.

Row ids are positions in the source's order. Chunks are cut at multiples of
``rows_per_chunk`` and around rows already committed, so the same rows always form the same
chunk, and a resumed run reads past committed rows without running them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait.errors import InputError
from plait.io._arrow import RecordBatch, Table, pa, pads
from plait.io._output import iter_uncommitted

__all__ = ["Chunk", "FileSource", "ListSource", "Source", "iter_chunks", "open_source"]

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json",
            ".json": "json", ".ndjson": "json"}


@dataclass
class Chunk:
    """Rows [start, end) of the source.

    Attributes:
        start: Row id of the first row.
        table: The rows, with every source column.
    """

    start: int
    table: Table

    @property
    def end(self) -> int:
        """Row id after the last row."""
        return self.start + self.table.num_rows


class Source:
    """A source read in order as record batches."""

    description: str = ""
    """Identifies the source in the output manifest (a changed source is detected)."""

    total: int | None = None
    """Rows in the source, if cheaply known."""

    def column_names(self) -> list[str]:
        """The source's columns."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[RecordBatch]:
        """Every row, in order, as batches of about ``batch_size`` rows."""
        raise NotImplementedError


class FileSource(Source):
    """Parquet, CSV or JSON-lines files, scanned lazily with ``pyarrow.dataset``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"Input {self.path} does not exist. Pass a Parquet, CSV or "
                             "JSON-lines file, or a directory of them.")
        files = ([self.path] if self.path.is_file() else
                 sorted(p for p in self.path.rglob("*")
                        if p.is_file() and p.suffix.lower() in _FORMATS
                        and not p.name.startswith((".", "_"))))
        if not files:
            raise InputError(f"No .parquet, .csv or .jsonl files in {self.path}.")
        kinds = {_FORMATS.get(p.suffix.lower()) for p in files}
        if len(kinds) != 1 or None in kinds:
            raise InputError(
                f"Input {self.path} mixes or lacks file formats ({sorted(map(str, kinds))}). "
                "Use one format: .parquet, .csv or .jsonl."
            )
        self.format = str(kinds.pop())
        try:
            self.dataset = pads.dataset([str(p) for p in files], format=self.format)
            self.total = self.dataset.count_rows() if self.format == "parquet" else None
        except (OSError, pa.ArrowException) as exc:
            raise InputError(self._unreadable(exc)) from None
        self.description = json.dumps([[str(p), p.stat().st_size] for p in files])

    def column_names(self) -> list[str]:
        """The files' columns."""
        return list(self.dataset.schema.names)

    def batches(self, batch_size: int) -> Iterator[RecordBatch]:
        """Scan the files in order; one batch in memory at a time."""
        scanner = self.dataset.scanner(batch_size=batch_size)
        batches = iter(scanner.to_batches())
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as exc:
                raise InputError(self._unreadable(exc)) from None
            if batch is None:
                return
            yield batch

    def _unreadable(self, exc: BaseException) -> str:
        # Arrow's message names the file that failed; ours names the input and the fix.
        return (
            f"Input {self.path} cannot be read as {self.format} ({type(exc).__name__}: {exc}). "
            "The file is damaged or not in that format: re-export it, or remove the bad file "
            "from the input directory."
        )


class ListSource(Source):
    """A list of dicts (one per row) already in memory."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for i, row in enumerate(rows[:1000]):
            if not isinstance(row, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InputError(
                    f"Row {i} of the input list is a {type(row).__name__}, not a dict. Pass one "
                    "dict per row, e.g. [{'text': 'a'}, {'text': 'b'}]."
                )
        self.rows = rows
        self.total = len(rows)
        digest = hashlib.sha256()
        for row in rows:
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        self.description = f"list:{len(rows)}:{digest.hexdigest()[:16]}"

    def column_names(self) -> list[str]:
        """Keys of the first row."""
        return [str(k) for k in self.rows[0]] if self.rows else []

    def batches(self, batch_size: int) -> Iterator[RecordBatch]:
        """Slices of the list as record batches."""
        for lo in range(0, len(self.rows), batch_size):
            yield from pa.Table.from_pylist(list(self.rows[lo:lo + batch_size])).to_batches()


def open_source(source: Any) -> Source:
    """A ``Source`` for a path or a list of dicts (a ``Source`` is returned as is).

    Raises:
        InputError: The source is of another kind, or the path holds no readable files.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, str | os.PathLike):
        return FileSource(source)  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(source, list):
        return ListSource(source)  # pyright: ignore[reportUnknownArgumentType]
    raise InputError(
        f"Cannot read a dataset from a {type(source).__name__}. Pass a Parquet/CSV/JSON-lines "
        "path, a list of dicts, or (with plait_ray) a ray.data.Dataset."
    )


def iter_chunks(batches: Iterable[RecordBatch], rows_per_chunk: int,
                committed: list[tuple[int, int]]) -> Iterator[Chunk]:
    """Cut ``batches`` into chunks of at most ``rows_per_chunk`` rows, skipping ``committed``.

    Chunks never cross a multiple of ``rows_per_chunk`` and never contain a committed row.
    """
    pieces: list[RecordBatch] = []
    first = end = 0
    offset = 0
    for batch in batches:
        lo = offset
        offset += batch.num_rows
        for a, b in iter_uncommitted(committed, lo, offset):
            pos = a
            while pos < b:
                boundary = (pos // rows_per_chunk + 1) * rows_per_chunk
                cut = min(b, boundary)
                if pieces and end != pos:
                    yield Chunk(first, _table(pieces))
                    pieces = []
                if not pieces:
                    first = pos
                pieces.append(batch.slice(pos - lo, cut - pos))
                end = cut
                if cut == boundary:
                    yield Chunk(first, _table(pieces))
                    pieces = []
                pos = cut
    if pieces:
        yield Chunk(first, _table(pieces))


def _table(pieces: list[RecordBatch]) -> Table:
    if all(p.schema == pieces[0].schema for p in pieces):
        return pa.Table.from_batches(pieces)
    # Batches inferred separately (lists, CSV blocks) may type a column differently.
    return pa.concat_tables([pa.Table.from_batches([p]) for p in pieces],
                            promote_options="permissive")
