"""run_dataset on a private local Ray never adopts stray, foreign or damaged output parts.

Real Parquet parts written by Ray workers, then damaged on disk. Each case checks the
``CheckpointError`` names the file and the fix, and that after following the advice the
output holds exactly one right row per input, in order. The local-executor twins are in
``tests/integration/test_dataset_output_trust.py``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle

from plait import LLMInference, Module
from plait.errors import CheckpointError
from plait.io import read_output
from plait.testing import LLMServer
from plait_ray.dataset import run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

# Ray workers cannot import test modules: ship this module's pipeline by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEXTS = [f"t{i}" for i in range(100)]


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(text)


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer().run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # puts the key in the env before Ray starts
        yield srv  # type: ignore[misc]


@pytest.fixture(scope="module")
def local_ray(server: LLMServer) -> Iterator[None]:
    # address="local": never join another cluster running on this shared machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def rows(texts: list[str]) -> list[dict[str, str]]:
    return [{"text": t} for t in texts]


def parts(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def run(server: LLMServer, texts: list[str], out: Path, **options: Any) -> int:
    """Run the dataset; the number of requests it sent."""
    before = server.stats().total_requests
    run_dataset(Echo(), rows(texts), out, resources=server.resource_config({"fast": "m"}),
                rows_per_chunk=20, workers=2, progress=False, **options)
    return server.stats().total_requests - before


def assert_exact(out: Path, texts: list[str]) -> None:
    """Exactly one output row per input, in input order, each the right value."""
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(range(len(texts)))
    assert table.column("text").to_pylist() == texts
    assert table.column("output").to_pylist() == [f"[m] echo: {t}" for t in texts]


def test_stray_parts_past_the_source_never_add_rows(local_ray: None, server: LLMServer,
                                                    tmp_path: Path) -> None:
    """Today: the parts of a longer earlier run stay, and 100 inputs give 120 rows."""
    out = tmp_path / "out"
    run(server, [*TEXTS, *(f"extra {i}" for i in range(20))], out)
    with pytest.raises(CheckpointError, match=r"part-000000000100-000000000120.*100 rows"):
        run(server, TEXTS, out, resume="force")
    parts(out)[-1].unlink()  # the advice
    assert run(server, TEXTS, out, resume="force") == 0
    assert_exact(out, TEXTS)


def test_deleted_manifest_next_to_old_parts(local_ray: None, server: LLMServer,
                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(server, TEXTS, out)
    (out / "_plait_dataset.json").unlink()
    with pytest.raises(CheckpointError, match=r"no _plait_dataset.json.*resume='fresh'"):
        run(server, TEXTS, out)
    assert run(server, TEXTS, out, resume="force") == 0  # adopted after verification
    assert_exact(out, TEXTS)


def _rewritten(out: Path, tmp: Path, server: LLMServer) -> Path:
    path = parts(out)[1]
    table = pq.read_table(path)
    outputs = table.column("output").to_pylist()
    outputs[0] = "forged"
    index = table.schema.get_field_index("output")
    pq.write_table(table.set_column(index, "output", pa.array(outputs)), path)
    return path


def _foreign(out: Path, tmp: Path, server: LLMServer) -> Path:
    other = tmp / "other"
    run(server, TEXTS, other)
    path = parts(out)[2]
    shutil.copy(parts(other)[2], path)
    return path


def _stray_copy(out: Path, tmp: Path, server: LLMServer) -> Path:
    # A stray file under a committed name: a copy of another range's part.
    path = parts(out)[3]
    shutil.copy(parts(out)[0], path)
    return path


@pytest.mark.parametrize("damage", [_rewritten, _foreign, _stray_copy])
def test_damaged_or_foreign_part_is_named_then_deleting_it_recovers(
        local_ray: None, server: LLMServer, tmp_path: Path, damage: Any) -> None:
    out = tmp_path / "out"
    run(server, TEXTS, out)
    path = damage(out, tmp_path, server)
    for attempt in (lambda: run(server, TEXTS, out), lambda: read_output(out)):
        with pytest.raises(CheckpointError) as info:
            attempt()
        message = str(info.value)
        assert path.name in message and "Delete" in message and "resume='fresh'" in message
    path.unlink()  # the advice
    assert run(server, TEXTS, out) == 20  # only the deleted part's rows run again
    assert_exact(out, TEXTS)
