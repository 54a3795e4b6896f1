import asyncio
import json

import pytest
from pydantic import BaseModel

from plait.checkpoint import CheckpointStore, RowRecord, plait_version
from plait.errors import CheckpointError, ServerError
from plait.serialize import ErrorInfo, model_registry


class Answer(BaseModel):
    text: str
    confidence: float


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(path, **kwargs):
    kwargs.setdefault("models", model_registry([Answer]))
    kwargs.setdefault("graph_hash", "graph-1")
    kwargs.setdefault("input_fingerprint", "sha256:inputs-1")
    return CheckpointStore(path, **kwargs)


def segments(path):
    return sorted(p.name for p in path.glob("part-*.arrow"))


def test_rows_nodes_and_usage_round_trip(tmp_path):
    with make(tmp_path) as store:
        store.record_node(0, "llm_1", Answer(text="a", confidence=0.5), usage=(10, 3))
        store.record_row(0, {"answer": Answer(text="a", confidence=0.5), "pair": (1, 2)},
                         input_tokens=10, output_tokens=3)
        store.record_node(1, "llm_1", "partial", usage=(4, 1))
        store.record_node(1, "llm_2", [1, None, {"k": b"raw"}])

    resumed = make(tmp_path).open()
    assert resumed.completed_row_ids() == {0}
    assert resumed.completed_rows() == {
        0: RowRecord(0, {"answer": Answer(text="a", confidence=0.5), "pair": (1, 2)}, 10, 3)
    }
    assert list(resumed.iter_completed_rows()) == list(resumed.completed_rows().values())
    assert resumed.is_row_done(0)
    assert not resumed.is_row_done(1)
    # Node values of a done row are not needed; of an unfinished row they are all returned.
    assert resumed.completed_nodes(0) == {}
    assert resumed.completed_nodes(1) == {"llm_1": "partial", "llm_2": [1, None, {"k": b"raw"}]}
    assert resumed.completed_nodes(99) == {}


def test_resume_skips_done_rows_and_ignores_repeats(tmp_path):
    with make(tmp_path) as store:
        store.record_row(0, "first")
        store.record_row(0, "second in same run")  # ignored: row already done
    with make(tmp_path) as store:
        assert store.is_row_done(0)
        store.record_row(0, "third")  # ignored: done in an earlier run
        store.record_node(0, "n", "ignored")
        store.record_row(1, "new")
        assert store.is_row_done(1)
    final = make(tmp_path).open()
    assert {r: rec.output for r, rec in final.completed_rows().items()} == {0: "first", 1: "new"}


def test_failed_rows_are_retried_with_their_nodes(tmp_path):
    with make(tmp_path) as store:
        store.record_node(3, "llm_1", "kept")
        store.record_failure(3, ServerError("upstream 503", status=503))
    store = make(tmp_path).open()
    assert not store.is_row_done(3)
    assert store.failed_rows() == {3: ErrorInfo("ServerError", "upstream 503", 503)}
    assert store.completed_nodes(3) == {"llm_1": "kept"}
    store.record_row(3, "recovered")
    store.close()
    again = make(tmp_path).open()
    assert again.failed_rows() == {}
    assert again.completed_rows()[3].output == "recovered"


def test_manifest_contents(tmp_path):
    make(tmp_path).open().close()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["graph_hash"] == "graph-1"
    assert manifest["input_fingerprint"] == "sha256:inputs-1"
    assert manifest["plait_version"] == plait_version() != ""
    assert manifest["format_version"] == 2
    assert manifest["created_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"graph_hash": "graph-2"}, "the pipeline changed"),
        ({"input_fingerprint": "sha256:inputs-2"}, "the inputs changed"),
    ],
)
def test_mismatch_is_an_error_naming_the_change_and_options(tmp_path, change, expected):
    with make(tmp_path) as store:
        store.record_row(0, "old")
    with pytest.raises(CheckpointError) as info:
        make(tmp_path, **change).open()
    message = str(info.value)
    assert expected in message
    assert "resume='force'" in message
    assert "resume='fresh'" in message
    assert str(tmp_path) in message


def test_force_resumes_and_adopts_the_new_identity(tmp_path):
    with make(tmp_path) as store:
        store.record_row(0, "old")
    forced = make(tmp_path, graph_hash="graph-2", resume="force").open()
    assert forced.is_row_done(0)
    forced.close()
    # The next run of the changed pipeline resumes without force.
    assert make(tmp_path, graph_hash="graph-2").open().is_row_done(0)


def test_fresh_deletes_old_records_only(tmp_path):
    (tmp_path / "notes.txt").write_text("user file")
    with make(tmp_path) as store:
        store.record_row(0, "old")
    (tmp_path / ".part-x-00000009.arrow.tmp-dead").write_bytes(b"partial")
    fresh = make(tmp_path, graph_hash="graph-2", resume="fresh").open()
    assert not fresh.is_row_done(0)
    assert fresh.completed_rows() == {}
    assert (tmp_path / "notes.txt").exists()
    assert not list(tmp_path.glob(".*tmp*"))
    assert fresh.manifest.graph_hash == "graph-2"


def test_flush_every_and_explicit_flush(tmp_path):
    store = make(tmp_path, flush_every=3, clock=FakeClock()).open()
    store.record_row(0, "a")
    store.record_row(1, "b")
    assert segments(tmp_path) == []
    store.record_row(2, "c")
    assert len(segments(tmp_path)) == 1
    store.record_row(3, "d")
    store.flush()
    store.flush()  # nothing buffered: no empty segment
    assert len(segments(tmp_path)) == 2
    store.close()
    store.close()
    assert len(segments(tmp_path)) == 2


def test_flush_interval_uses_the_clock(tmp_path):
    clock = FakeClock()
    store = make(tmp_path, flush_every=1000, flush_interval=1.0, clock=clock).open()
    store.record_row(0, "a")
    assert segments(tmp_path) == []
    clock.now = 1.5
    assert store.flush_due
    store.record_row(1, "b")  # the record that finds the interval passed flushes both
    assert len(segments(tmp_path)) == 1
    assert not store.flush_due
    assert make(tmp_path).open().completed_row_ids() == {0, 1}


def test_aflush_writes_off_the_loop_without_auto_flush(tmp_path):
    store = make(tmp_path, flush_every=2, auto_flush=False).open()

    async def run() -> None:
        for row in range(5):
            store.record_row(row, row * 10)
            if store.flush_due:
                await store.aflush()
        await store.aflush()

    asyncio.run(run())
    assert len(segments(tmp_path)) == 3
    rows = make(tmp_path).open().completed_rows()
    assert {r: rec.output for r, rec in rows.items()} == {r: r * 10 for r in range(5)}


def test_readers_ignore_temp_files_of_interrupted_writes(tmp_path):
    with make(tmp_path) as store:
        store.record_row(0, "committed")
    # What a writer killed between write and os.replace leaves behind.
    (tmp_path / ".part-dead-00000000.arrow.tmp-1a2b3c4d").write_bytes(b"ARROW1\x00\x00trunc")
    store = make(tmp_path).open()
    assert store.completed_row_ids() == {0}


def test_corrupt_segment_is_a_clear_error(tmp_path):
    with make(tmp_path) as store:
        store.record_row(0, "committed")
    (tmp_path / "part-bad-00000000.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(CheckpointError, match=r"part-bad-00000000\.arrow"):
        make(tmp_path).open()


def test_segments_without_manifest_are_not_adopted_silently(tmp_path):
    with make(tmp_path) as store:
        store.record_row(0, "x")
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"no manifest\.json"):
        make(tmp_path).open()
    assert make(tmp_path, resume="force").open().is_row_done(0)


def test_two_writers_union_and_first_committed_wins(tmp_path):
    make(tmp_path).open().close()
    a = make(tmp_path, writer_id="worker-a", flush_every=100).open(load=False)
    b = make(tmp_path, writer_id="worker-b", flush_every=100).open(load=False)
    for row in range(10):
        a.record_row(row, f"a{row}")
    a.flush()
    for row in range(5, 15):  # rows 5-9 redone by b after a already committed them
        b.record_row(row, f"b{row}")
        b.record_node(row, "n", "b-node")
    b.flush()
    a.record_node(20, "n", "from a")
    b.record_node(20, "n", "from b")
    a.flush()
    b.flush()
    reader = make(tmp_path).open()
    outputs = {r: rec.output for r, rec in reader.completed_rows().items()}
    assert sorted(outputs) == list(range(15))
    assert [outputs[r] for r in range(5, 10)] == [f"a{r}" for r in range(5, 10)]
    assert outputs[12] == "b12"
    assert reader.completed_nodes(20) == {"n": "from a"}
    assert segments(tmp_path)[0].startswith("part-worker-a-")


def test_reused_writer_id_never_overwrites_its_segments(tmp_path):
    with make(tmp_path, writer_id="w") as store:
        store.record_row(0, "first run")
    with make(tmp_path, writer_id="w") as store:
        store.record_row(1, "second run")
    assert segments(tmp_path) == ["part-w-00000000.arrow", "part-w-00000001.arrow"]
    assert make(tmp_path).open().completed_row_ids() == {0, 1}


def test_files_hold_only_given_values_and_no_pickle(tmp_path):
    with make(tmp_path) as store:
        store.record_node(0, "llm", Answer(text="visible", confidence=1.0), usage=(1, 2))
        store.record_row(0, {"out": "visible"})
        store.record_failure(1, ServerError("oops", status=500))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "manifest.json" and all(n.startswith("part-") for n in names[1:])
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data  # pickle frames
        assert b"pickle" not in data.lower()
        assert b"api_key" not in data.lower() and b"authorization" not in data.lower()


def test_invalid_arguments_and_misuse(tmp_path):
    with pytest.raises(CheckpointError, match="resume must be"):
        make(tmp_path, resume="maybe")
    with pytest.raises(CheckpointError, match="flush_every must be >= 1, got 0"):
        make(tmp_path, flush_every=0)
    with pytest.raises(CheckpointError, match="flush_interval"):
        make(tmp_path, flush_interval=-1)
    with pytest.raises(CheckpointError, match="writer_id"):
        make(tmp_path, writer_id="a/b")
    store = make(tmp_path)
    with pytest.raises(CheckpointError, match="not open"):
        store.record_row(0, "x")
    with pytest.raises(CheckpointError, match="not open"):
        _ = store.manifest
    store.open()
    with pytest.raises(CheckpointError, match=r"builtins\.set"):
        store.record_node(0, "n", {1, 2})
    store.close()
    with pytest.raises(CheckpointError, match="not open"):
        store.record_row(0, "x")


def test_unreadable_manifest_suggests_fresh(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="resume='fresh'"):
        make(tmp_path).open()
    assert make(tmp_path, resume="fresh").open().completed_rows() == {}
