"""Checkpoints never serve the wrong rows, never run code, and refuse corrupt files loudly.

Every case runs the real local executor against the loopback server, writes a real
checkpoint, damages it on disk, and checks (a) the ``CheckpointError`` names the file and the
choices, and (b) after following the advice the call returns exactly one right output per
input, in order (``assert_exact``).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from plait import LLMInference, Module
from plait.checkpoint._files import write_segment
from plait.checkpoint._manifest import Manifest, row_hash
from plait.errors import CheckpointError, ConfigError
from plait.execution import run
from plait.testing import LLMServer

T = TypeVar("T")
ROWS = [f"text {i}" for i in range(30)]


class Echo(Module):
    """One request per row on ``fast``."""

    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(text)


class Verdict(BaseModel):
    label: str
    score: float


class Judge(Module):
    """Structured output: the pipeline declares Verdict through response_format."""

    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", response_format=Verdict)

    def forward(self, text: str) -> Verdict:
        return self.llm(text)


def expected(text: str) -> str:
    return f"[m-a] echo: {text}"


def assert_exact(outputs: list[Any], rows: list[str]) -> None:
    """Exactly one output per input, in input order, each the right value."""
    assert len(outputs) == len(rows)
    assert outputs == [expected(t) for t in rows]


def with_server(body: Callable[[LLMServer], Awaitable[T]]) -> T:
    async def main() -> T:
        async with LLMServer() as server:
            return await asyncio.wait_for(body(server), 60)

    return asyncio.run(main())


def resources(server: LLMServer) -> Any:
    return server.resource_config({"fast": "m-a"}, max_concurrent=8)


async def echo(server: LLMServer, rows: Any, ckpt: Path, **settings: Any) -> list[Any]:
    return await run(Echo(), rows, resources=resources(server), checkpoint_dir=ckpt, **settings)


def segments(ckpt: Path) -> list[Path]:
    return sorted(ckpt.glob("part-*.arrow"))


def plant_segment(ckpt: Path, records: list[tuple[int, str, str | None, str, int, int, str]],
                  name: str = "part-planted-00000000.arrow") -> Path:
    """A segment with a valid checksum and this directory's id: only its content is hostile."""
    manifest = Manifest.read(ckpt)
    assert manifest is not None
    path = ckpt / name
    # commit_ns=1: committed "first", so it would win the de-duplication if it were trusted.
    write_segment(path, records, writer_id="planted", seq=0, commit_ns=1,
                  checkpoint_id=manifest.checkpoint_id)
    return path


def digest_of(text: str) -> str:
    return row_hash((text,), {})


# -- 1. streamed inputs are checked row by row ------------------------------------------------


def test_stream_with_other_data_is_refused_not_served(tmp_path: Path) -> None:
    other = [f"other {i}" for i in range(30)]

    async def body(server: LLMServer) -> None:
        assert_exact(await echo(server, iter(ROWS), tmp_path), ROWS)
        server.reset_stats()
        assert_exact(await echo(server, iter(ROWS), tmp_path), ROWS)  # same stream: resumed
        assert server.stats().total_requests == 0
        with pytest.raises(CheckpointError, match=r"Row 0's inputs differ.*resume='force'"):
            await echo(server, iter(other), tmp_path)
        # A stream that changes part way is refused at the first changed row.
        mixed = [*ROWS[:10], "changed", *ROWS[11:]]
        with pytest.raises(CheckpointError, match="Row 10's inputs differ"):
            await echo(server, iter(mixed), tmp_path)
        server.reset_stats()
        assert_exact(await echo(server, iter(other), tmp_path, resume="force"), other)
        assert server.stats().total_requests == 30
        # Rows recorded for both versions: each stream gets its own rows back, nothing asked.
        server.reset_stats()
        assert_exact(await echo(server, iter(ROWS), tmp_path, resume="force"), ROWS)
        assert_exact(await echo(server, iter(other), tmp_path, resume="force"), other)
        assert server.stats().total_requests == 0

    with_server(body)


# -- 2. resume="force" reuses a row only where its inputs match -------------------------------


def test_force_with_fewer_new_inputs_returns_only_them(tmp_path: Path) -> None:
    first = [f"first {i}" for i in range(200)]
    new = [f"new {i}" for i in range(50)]

    async def body(server: LLMServer) -> None:
        assert_exact(await echo(server, first, tmp_path), first)
        server.reset_stats()
        assert_exact(await echo(server, new, tmp_path, resume="force"), new)
        assert server.stats().total_requests == 50
        streamed = [r async for r in run(Echo(), iter(new), resources=resources(server),
                                          checkpoint_dir=tmp_path, resume="force",
                                          preserve_order=True)]
        assert [(r.index, r.output) for r in streamed] == [
            (i, expected(t)) for i, t in enumerate(new)]
        # A prefix of the first run: its rows match and are served without a request.
        server.reset_stats()
        assert_exact(await echo(server, first[:50], tmp_path, resume="force"), first[:50])
        assert server.stats().total_requests == 0

    with_server(body)


def test_force_reruns_exactly_the_changed_rows(tmp_path: Path) -> None:
    changed = list(ROWS)
    changed[5], changed[7] = "five, edited", "seven, edited"

    async def body(server: LLMServer) -> None:
        await echo(server, ROWS, tmp_path)
        with pytest.raises(CheckpointError, match="inputs changed"):
            await echo(server, changed, tmp_path)
        server.reset_stats()
        assert_exact(await echo(server, changed, tmp_path, resume="force"), changed)
        assert server.stats().total_requests == 2

    with_server(body)


def test_declared_pydantic_outputs_resume_as_models(tmp_path: Path) -> None:
    async def body(server: LLMServer) -> None:
        config = resources(server)
        first = await run(Judge(), ROWS[:5], resources=config, checkpoint_dir=tmp_path)
        server.reset_stats()
        again = await run(Judge(), ROWS[:5], resources=config, checkpoint_dir=tmp_path)
        assert server.stats().total_requests == 0
        assert again == first and all(type(v) is Verdict for v in again)

    with_server(body)


# -- 3. loading a checkpoint never runs code --------------------------------------------------

PAYLOAD = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from pydantic import BaseModel
class Model(BaseModel):
    pass
"""


class _Opens:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("tag", ["payload:Model", "plait_sidefx_mod:Model", "os:system",
                                 "subprocess:Popen", "builtins:eval"])
def test_hostile_files_in_the_checkpoint_never_run(tmp_path: Path, tag: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "ckpt"
    ran = tmp_path / "ran.txt"
    rows = ROWS[:10]

    async def body(server: LLMServer) -> None:
        assert_exact(await echo(server, rows, ckpt), rows)
        # Python files a careless resume could import: the checkpoint dir is the cwd and on
        # sys.path, the worst case.
        for name in ("payload.py", "plait_sidefx_mod.py"):
            (ckpt / name).write_text(PAYLOAD.format(marker=str(ran)))
        monkeypatch.chdir(ckpt)
        monkeypatch.syspath_prepend(str(ckpt))
        (ckpt / "evil.pkl").write_bytes(pickle.dumps(_Opens(str(ran))))
        pickled = ckpt / "part-evil-00000001.arrow"
        pickled.write_bytes(pickle.dumps(_Opens(str(ran))))
        with pytest.raises(CheckpointError, match=r"part-evil-00000001\.arrow cannot be read"):
            await echo(server, rows, ckpt)
        pickled.unlink()
        hostile = json.dumps({"__pydantic__": tag, "data": {"command": f"touch {ran}"}})
        planted = plant_segment(ckpt, [(3, "row", None, hostile, 0, 0, digest_of(rows[3]))])
        with pytest.raises(CheckpointError, match=rf"{tag}.*does not declare.*{planted.name}"):
            await echo(server, rows, ckpt)
        planted.unlink()
        server.reset_stats()
        assert_exact(await echo(server, rows, ckpt), rows)  # a clean resume
        assert server.stats().total_requests == 0

    with_server(body)
    assert not ran.exists()
    assert "payload" not in sys.modules and "plait_sidefx_mod" not in sys.modules


# -- 4. corrupt files: a CheckpointError naming the file, then exact rows ----------------------


def _truncate(ckpt: Path) -> Path:
    path = segments(ckpt)[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _tamper(ckpt: Path) -> Path:
    # Same length, valid Arrow: only the checksum can tell.
    for path in segments(ckpt):
        data = path.read_bytes()
        if b"echo: text 1" in data:
            path.write_bytes(data.replace(b"echo: text 1", b"echo: TEXT 1"))
            return path
    raise AssertionError("no segment holds row 1")


def _not_a_segment(ckpt: Path) -> Path:
    path = ckpt / "part-stray-00000003.arrow"
    path.write_bytes(b"PAR1 this is not an Arrow file")
    return path


def _non_json_value(ckpt: Path) -> Path:
    return plant_segment(ckpt, [(2, "row", None, "{not json", 0, 0, digest_of(ROWS[2]))])


def _bad_tag(ckpt: Path) -> Path:
    return plant_segment(ckpt, [(2, "row", None, '{"__bytes__": 12}', 0, 0, digest_of(ROWS[2]))])


@pytest.mark.parametrize("damage", [_truncate, _tamper, _not_a_segment, _non_json_value,
                                    _bad_tag])
def test_corrupt_segment_is_named_then_deleting_it_recovers(
        tmp_path: Path, damage: Callable[[Path], Path]) -> None:
    async def body(server: LLMServer) -> None:
        # flush_every is 64 records: 30 rows make one segment, so write two runs' worth.
        await echo(server, ROWS, tmp_path)
        path = damage(tmp_path)
        with pytest.raises(CheckpointError) as info:
            await echo(server, ROWS, tmp_path)
        message = str(info.value)
        assert path.name in message and "resume='fresh'" in message and "Delete" in message
        path.unlink()  # the advice: delete that file (its rows run again)
        server.reset_stats()
        assert_exact(await echo(server, ROWS, tmp_path), ROWS)
        assert server.stats().total_requests <= len(ROWS)

    with_server(body)


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b"[1, 2]", b'{"format_version": 2}',
                                     "{\"graph_hash\": \"\u00e9\"}".encode("latin-1"), b""])
def test_garbage_manifest_is_named_then_fresh_recovers(tmp_path: Path, content: bytes) -> None:
    async def body(server: LLMServer) -> None:
        await echo(server, ROWS, tmp_path)
        (tmp_path / "manifest.json").write_bytes(content)
        with pytest.raises(CheckpointError, match=r"manifest.json.*resume='fresh'") as info:
            await echo(server, ROWS, tmp_path)
        assert "delete manifest.json" in str(info.value)
        assert_exact(await echo(server, ROWS, tmp_path, resume="fresh"), ROWS)

    with_server(body)


def test_deleted_manifest_next_to_old_parts(tmp_path: Path) -> None:
    other = [f"other {i}" for i in range(20)]

    async def body(server: LLMServer) -> None:
        await echo(server, ROWS, tmp_path)
        (tmp_path / "manifest.json").unlink()
        with pytest.raises(CheckpointError, match=r"no manifest.json.*resume='fresh'"):
            await echo(server, other, tmp_path)
        # force adopts the parts, but serves a stored row only where its inputs match.
        server.reset_stats()
        assert_exact(await echo(server, other, tmp_path, resume="force"), other)
        assert server.stats().total_requests == 20
        server.reset_stats()
        assert_exact(await echo(server, ROWS, tmp_path, resume="force"), ROWS)
        assert server.stats().total_requests == 0

    with_server(body)


def test_stray_segment_from_another_checkpoint_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"

    async def body(server: LLMServer) -> None:
        # Same pipeline, same rows: only the checkpoint id tells the copied part apart.
        await echo(server, ROWS, a)
        await echo(server, ROWS[:10], b)
        stray = b / "part-copied-00000000.arrow"
        shutil.copy(segments(a)[0], stray)
        with pytest.raises(CheckpointError, match=r"part-copied.*another checkpoint.*Delete"):
            await echo(server, ROWS[:10], b)
        stray.unlink()
        server.reset_stats()
        assert_exact(await echo(server, ROWS[:10], b), ROWS[:10])
        assert server.stats().total_requests == 0

    with_server(body)


# -- 5. output paths are checked before the first request --------------------------------------


def test_profile_path_in_missing_directory_fails_before_any_request(tmp_path: Path) -> None:
    async def body(server: LLMServer) -> None:
        with pytest.raises(ConfigError, match=r"profile_path .*missing.*does not exist"):
            await run(Echo(), ROWS, resources=resources(server),
                      profile_path=tmp_path / "missing" / "trace.json")
        with pytest.raises(ConfigError, match=r"profile_path .* is a directory"):
            await run(Echo(), ROWS, resources=resources(server), profile_path=tmp_path)
        assert server.stats().total_requests == 0

    with_server(body)


def test_checkpoint_dir_that_is_a_file_fails_before_any_request(tmp_path: Path) -> None:
    file = tmp_path / "ckpt"
    file.write_text("not a directory")

    async def body(server: LLMServer) -> None:
        with pytest.raises(ConfigError, match=r"checkpoint_dir .*ckpt is a file.*directory"):
            await echo(server, ROWS, file)
        assert server.stats().total_requests == 0
        assert file.read_text() == "not a directory"

    with_server(body)
