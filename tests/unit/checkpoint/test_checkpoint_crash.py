"""Real processes: a writer killed with SIGKILL, and two writers sharing one directory."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plait.checkpoint import CheckpointStore

REPO = Path(__file__).resolve().parents[3]
FLUSH_EVERY = 7

WRITER = textwrap.dedent(
    """
    import sys
    from plait.checkpoint import CheckpointStore

    directory, writer, start, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = CheckpointStore(directory, graph_hash="g", input_fingerprint="f", writer_id=writer,
                            flush_every={flush_every}, flush_interval=3600.0).open(load=False)
    row = start
    while stop < 0 or row < stop:  # stop < 0: run until killed
        store.record_node(row, "llm", "x" * 200, usage=(1, 1))
        store.record_row(row, {{"row": row, "by": writer}})
        row += 1
    store.close()
    """
).format(flush_every=FLUSH_EVERY)


def spawn(directory: Path, writer: str, start: int, stop: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), writer, str(start), str(stop)], env=env
    )


def make(directory: Path, **kwargs) -> CheckpointStore:
    return CheckpointStore(directory, graph_hash="g", input_fingerprint="f", **kwargs)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_write_loses_only_the_unflushed_buffer(tmp_path):
    make(tmp_path).open().close()  # the driver prepares the directory
    child = spawn(tmp_path, "victim", 0, -1)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("part-*.arrow"))) < 20:
            assert child.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.01)
        seen_before_kill = len(list(tmp_path.glob("part-*.arrow")))
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)

    store = make(tmp_path).open()  # every committed segment is readable
    done = store.completed_row_ids()
    # Rows were recorded in order, two records each; a flush commits FLUSH_EVERY records, so
    # what survives is a prefix of the rows: only the unflushed tail is lost.
    assert done == set(range(len(done)))
    assert len(done) >= seen_before_kill * FLUSH_EVERY // 2
    outputs = store.completed_rows()
    assert all(outputs[row].output == {"row": row, "by": "victim"} for row in done)

    # A resumed run skips exactly those rows and completes the rest.
    with make(tmp_path) as resumed:
        for row in range(len(done) + 10):
            if not resumed.is_row_done(row):
                resumed.record_row(row, {"row": row, "by": "resume"})
    assert make(tmp_path).open().completed_row_ids() == set(range(len(done) + 10))


def test_two_processes_write_one_directory_every_row_exactly_once(tmp_path):
    make(tmp_path).open().close()
    first = spawn(tmp_path, "w1", 0, 120)
    second = spawn(tmp_path, "w2", 80, 200)  # rows 80-119 are done by both
    assert first.wait(timeout=60) == 0
    assert second.wait(timeout=60) == 0

    rows = make(tmp_path).open().completed_rows()
    assert sorted(rows) == list(range(200))
    assert all(rows[r].output["by"] == "w1" for r in range(80))
    assert all(rows[r].output["by"] == "w2" for r in range(120, 200))
    assert {rows[r].output["by"] for r in range(80, 120)} <= {"w1", "w2"}
    names = {p.name.split("-")[1] for p in tmp_path.glob("part-*.arrow")}
    assert names == {"w1", "w2"}
