"""Per-row input hashes, checksums and checkpoint ids of the store (no server, no run)."""

import shutil

import pytest

from plait.checkpoint import CheckpointStore
from plait.checkpoint._manifest import row_hash
from plait.errors import CheckpointError


def make(path, **kwargs):
    kwargs.setdefault("graph_hash", "graph-1")
    kwargs.setdefault("input_fingerprint", "sha256:inputs-1")
    return CheckpointStore(path, **kwargs)


def test_row_hash_is_stable_and_tells_inputs_apart():
    assert row_hash(("a",), {}) == row_hash(("a",), {})
    distinct = {row_hash(("a",), {}), row_hash(("b",), {}), row_hash(("a", "b"), {}),
                row_hash(("ab",), {}), row_hash((), {"text": "a"}), row_hash((1,), {}),
                row_hash(("1",), {}), row_hash((("a",),), {})}
    assert len(distinct) == 8


def test_records_serve_only_rows_with_the_same_inputs(tmp_path):
    old, new = row_hash(("old",), {}), row_hash(("new",), {})
    with make(tmp_path) as store:
        store.record_row(0, "out-old", input_hash=old)
        store.record_node(1, "llm_1", "node-old", input_hash=old)
    resumed = make(tmp_path).open()
    assert resumed.row_status(0, old) == "done"
    assert resumed.row_status(0, new) == "changed"
    assert resumed.row_status(1, new) == "changed"
    assert resumed.row_status(2, new) == "new"
    assert resumed.completed_nodes(1, old) == {"llm_1": "node-old"}
    assert resumed.completed_nodes(1, new) == {}
    assert [r.output for r in resumed.read_rows([(0, old), (0, new), (5, old)])] == ["out-old"]
    # Recording the new inputs of row 0 adds a version; both stay servable.
    resumed.record_row(0, "out-new", input_hash=new)
    resumed.close()
    again = make(tmp_path).open()
    assert [r.output for r in again.read_rows([(0, new)])] == ["out-new"]
    assert [r.output for r in again.read_rows([(0, old)])] == ["out-old"]


def test_segment_edited_after_writing_fails_its_checksum(tmp_path):
    with make(tmp_path) as store:
        store.record_row(0, "original value")
    (segment,) = tmp_path.glob("part-*.arrow")
    segment.write_bytes(segment.read_bytes().replace(b"original", b"ORIGINAL"))
    with pytest.raises(CheckpointError, match=rf"{segment.name} fails its checksum.*Delete"):
        make(tmp_path).open()


def test_segment_of_another_checkpoint_is_refused_and_orphans_adopt_their_id(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with make(a) as store:
        store.record_row(0, "from a")
    make(b).open().close()
    (segment,) = a.glob("part-*.arrow")
    shutil.copy(segment, b / segment.name)
    with pytest.raises(CheckpointError, match="belongs to another checkpoint"):
        make(b).open()
    # Without a manifest, "force" adopts orphans under their own id, so they stay readable.
    (a / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"no manifest\.json"):
        make(a).open()
    assert make(a, resume="force").open().is_row_done(0)
    assert make(a).open().is_row_done(0)


def test_non_json_value_names_the_segment(tmp_path):
    with make(tmp_path) as store:
        store._append((0, "row", None, "{not json", 0, 0, ""))  # what a forged file holds
    (segment,) = tmp_path.glob("part-*.arrow")
    store = make(tmp_path).open()
    with pytest.raises(CheckpointError, match=rf"{segment.name} holds a value"):
        store.completed_rows()
