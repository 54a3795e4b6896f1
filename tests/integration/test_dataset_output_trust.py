"""Dataset outputs never adopt damaged or foreign parts, and bad inputs are named.

Local executor, loopback server, real Parquet parts damaged on disk. Each case checks the
``CheckpointError`` (or ``InputError``) names the file and the fix, and that after following
the advice ``read_output`` holds exactly one right row per input, in order (``assert_exact``).
The same cases on Ray are in ``tests/ray/test_dataset_corruption.py``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plait import LLMInference, Module
from plait.errors import CheckpointError, InputError
from plait.io import arun_dataset_local, read_output
from plait.testing import LLMServer

TEXTS = [f"text {i}" for i in range(100)]


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(text)


def assert_exact(out: Path, texts: list[str]) -> None:
    """Exactly one output row per input, in input order, each the right value."""
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(range(len(texts)))
    assert table.column("text").to_pylist() == texts
    assert table.column("output").to_pylist() == [f"[m-a] echo: {t}" for t in texts]
    assert table.column("error").to_pylist() == [None] * len(texts)


class Runner:
    """Runs the dataset against one loopback server, counting requests."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path

    def __call__(self, source: Any, out: Path, **options: Any) -> int:
        async def main() -> int:
            async with LLMServer() as server:
                res = server.resource_config({"fast": "m-a"}, max_concurrent=8)
                await asyncio.wait_for(arun_dataset_local(
                    Echo(), source, out, resources=res, rows_per_chunk=10, progress=False,
                    **options), 60)
                return server.stats().total_requests

        return asyncio.run(main())


@pytest.fixture
def run(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


def rows(texts: list[str]) -> list[dict[str, str]]:
    return [{"text": t} for t in texts]


def parts(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def _truncate(out: Path, tmp: Path) -> Path:
    path = parts(out)[3]
    path.write_bytes(path.read_bytes()[:-20])
    return path


def _rewritten(out: Path, tmp: Path) -> Path:
    # A valid Parquet file under a committed name, with one output edited: only the checksum
    # tells (the footer of pq.write_table carries none).
    path = parts(out)[2]
    table = pq.read_table(path)
    outputs = table.column("output").to_pylist()
    outputs[0] = "forged"
    index = table.schema.get_field_index("output")
    pq.write_table(table.set_column(index, "output", pa.array(outputs)), path)
    return path


def _renamed(out: Path, tmp: Path) -> Path:
    # A committed part moved onto another range: its rows would land on the wrong ids.
    source, target = parts(out)[4], parts(out)[5]
    shutil.copy(source, target)
    return target


def _foreign(out: Path, tmp: Path) -> Path:
    # A part of another output directory (same pipeline, same rows) copied in.
    other = tmp / "other"
    Runner(tmp)(rows(TEXTS), other)
    path = parts(out)[6]
    shutil.copy(parts(other)[6], path)
    return path


@pytest.mark.parametrize("damage", [_truncate, _rewritten, _renamed, _foreign])
def test_damaged_or_foreign_part_is_named_then_deleting_it_recovers(
        run: Runner, tmp_path: Path, damage: Callable[[Path, Path], Path]) -> None:
    out = tmp_path / "out"
    assert run(rows(TEXTS), out) == 100
    path = damage(out, tmp_path)
    for attempt in (lambda: run(rows(TEXTS), out), lambda: read_output(out)):
        with pytest.raises(CheckpointError) as info:
            attempt()
        message = str(info.value)
        assert path.name in message and "Delete" in message and "resume='fresh'" in message
    path.unlink()  # the advice
    assert run(rows(TEXTS), out) == 10  # only the deleted part's rows run again
    assert_exact(out, TEXTS)


def test_deleted_manifest_next_to_old_parts(run: Runner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(rows(TEXTS), out)
    (out / "_plait_dataset.json").unlink()
    with pytest.raises(CheckpointError, match=r"no _plait_dataset.json.*resume='fresh'"):
        run(rows(TEXTS), out)
    assert run(rows(TEXTS), out, resume="force") == 0  # adopted: checksums verified
    assert_exact(out, TEXTS)


def test_stray_parts_past_the_source_never_add_rows(run: Runner, tmp_path: Path) -> None:
    """Today: a longer earlier run's parts stay, and 100 inputs give 120 output rows."""
    out = tmp_path / "out"
    longer = [*TEXTS, *(f"extra {i}" for i in range(20))]
    run(rows(longer), out)
    with pytest.raises(CheckpointError, match="different source"):
        run(rows(TEXTS), out)
    with pytest.raises(CheckpointError, match=r"part-000000000100-000000000110.*100 rows"):
        run(rows(TEXTS), out, resume="force")
    for path in parts(out)[10:]:
        path.unlink()  # the advice
    assert run(rows(TEXTS), out, resume="force") == 0
    assert_exact(out, TEXTS)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[1, 2]", b"{}", b""])
def test_garbage_manifest_is_named_then_fresh_recovers(run: Runner, tmp_path: Path,
                                                       content: bytes) -> None:
    out = tmp_path / "out"
    run(rows(TEXTS), out)
    (out / "_plait_dataset.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"_plait_dataset.json.*resume='fresh'"):
        run(rows(TEXTS), out)
    assert run(rows(TEXTS), out, resume="fresh") == 100
    assert_exact(out, TEXTS)


def test_output_that_is_a_file_is_refused(run: Runner, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(CheckpointError, match=r"out.parquet is a file"):
        run(rows(TEXTS), out)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_input_parquet_names_the_file_before_any_request(
        run: Runner, tmp_path: Path, damage: str) -> None:
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(pa.table({"text": TEXTS[:50]}), source / "a.parquet")
    pq.write_table(pa.table({"text": TEXTS[50:]}), source / "b.parquet")
    bad = source / "b.parquet"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"PAR1" + b"\x07" * 200)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"b\.parquet.*re-export it"):
        run(source, out)
    assert not parts(out)
    bad.unlink()  # the advice: remove the bad file
    run(source, out, resume="force")  # the source changed (one file fewer)
    assert_exact(out, TEXTS[:50])
