"""Replies that must never cost a row, and error bodies that must never leak a key.

Every case runs against the real loopback server, for both wire formats and both transports
(the lean aiohttp clients and the official SDKs): malformed usage is bookkeeping (the reply
is kept, its usage recorded as unknown), an endless body is cut at ``max_response_bytes``
(the attempt fails as retryable), and a key echoed in an error body is masked everywhere a
run records the error: exception messages, ``NodeExecutionError``/``BatchError`` text, the
per-row error strings that checkpoints keep, the Parquet ``error`` column, and logs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from plait import LLMInference, Module, run
from plait.clients.base import LLMRequest
from plait.errors import BatchError, NodeExecutionError, ResponseFormatError
from plait.io import read_output, run_dataset_local
from plait.resources.config import DEFAULT_MAX_RESPONSE_BYTES
from plait.resources.manager import ResourceManager
from plait.testing import Fault, LLMServer, ThreadedServer

CASES = [("openai", "aiohttp"), ("openai", "sdk"), ("anthropic", "aiohttp"),
         ("anthropic", "sdk")]
KEY = f"sk-plait-echo-{secrets.token_hex(12)}"


@pytest.fixture(params=CASES, ids=[f"{p}-{t}" for p, t in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param


def arun(coro: Any, timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class One(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> Any:
        return self.llm(text)


def resources(server: LLMServer | ThreadedServer, case: tuple[str, str], **options: Any) -> Any:
    provider, transport = case
    return server.resource_config({"fast": "m"}, provider_api=provider,  # pyright: ignore[reportArgumentType]
                                  transport=transport, **options)


# -- malformed usage ---------------------------------------------------------------------------


def test_malformed_usage_keeps_every_row(case: tuple[str, str]) -> None:
    rows = [f"row {i}" for i in range(12)]

    async def main() -> tuple[list[Any], Any]:
        async with LLMServer(faults=[Fault("bad_usage", every=2)]) as server:
            res = resources(server, case, max_retries=0)
            outputs = await run(One(), rows, resources=res)
            return outputs, server.stats()

    outputs, stats = arun(main())
    assert outputs == [f"[m] echo: {row}" for row in rows]  # no row lost, none retried
    assert stats.total_requests == len(rows)
    assert stats.faults_by_kind == {"bad_usage": 6}


def test_malformed_usage_is_recorded_as_unknown(case: tuple[str, str]) -> None:
    async def main() -> tuple[Any, Any, dict[str, Any]]:
        async with LLMServer(faults=[Fault("bad_usage")]) as server:
            manager = ResourceManager(resources(server, case, max_retries=0))
            try:
                bad, _ = await manager.pool("fast").call(LLMRequest("first"))
                good, _ = await manager.pool("fast").call(LLMRequest("second"))
                return bad, good, manager.stats()["fast"]
            finally:
                await manager.aclose()

    bad, good, stats = arun(main())
    assert bad.text == "[m] echo: first" and not bad.usage.known
    assert (bad.usage.input_tokens, bad.usage.output_tokens) == (0, 0)
    assert good.usage.known and good.usage.input_tokens > 0
    assert stats["usage_unknown"] == 1 and stats["successes"] == 2 and stats["failures"] == 0
    assert stats["input_tokens"] == good.usage.input_tokens  # the unknown one adds nothing


# -- response size -----------------------------------------------------------------------------


def test_endless_body_is_cut_at_the_limit_and_retried(case: tuple[str, str]) -> None:
    limit = 1 << 20

    async def main() -> tuple[Any, dict[str, Any], Any]:
        fault = Fault("endless", body_bytes=64 << 20)
        async with LLMServer(faults=[fault]) as server:
            manager = ResourceManager(resources(server, case, max_retries=1,
                                                max_response_bytes=limit))
            try:
                response, _ = await manager.pool("fast").call(LLMRequest("hello"))
                return response, manager.stats()["fast"], server.stats()
            finally:
                await manager.aclose()

    response, stats, server_stats = arun(main())
    assert response.text == "[m] echo: hello"  # the retry succeeded
    assert stats["errors"] == {"ResponseFormatError": 1} and stats["retries"] == 1
    assert server_stats.total_requests == 2


def test_endless_body_is_bounded_by_default(case: tuple[str, str]) -> None:
    limit = DEFAULT_MAX_RESPONSE_BYTES  # 16 MiB; the body would go on to 64 MiB

    async def main() -> BaseException:
        fault = Fault("endless", every=1, body_bytes=64 << 20)
        async with LLMServer(faults=[fault]) as server:
            res = resources(server, case, max_retries=0)
            with pytest.raises(NodeExecutionError) as info:
                await run(One(), "x", resources=res)
            return info.value

    error = arun(main())
    assert isinstance(error.cause, ResponseFormatError) and error.cause.retryable
    assert f"max_response_bytes={limit}" in str(error)
    assert "Raise max_response_bytes" in str(error)


def test_declared_length_over_the_limit_is_refused_unread(case: tuple[str, str]) -> None:
    async def main() -> BaseException:
        async with LLMServer() as server:
            res = resources(server, case, max_retries=0, max_response_bytes=64)
            with pytest.raises(NodeExecutionError) as info:
                await run(One(), "x", resources=res)
            return info.value

    error = arun(main())
    assert isinstance(error.cause, ResponseFormatError)
    assert "declares" in str(error) and "max_response_bytes=64" in str(error)


# -- key echoed in an error body ---------------------------------------------------------------


def _assert_no_key(text: str) -> None:
    token = KEY.removeprefix("sk-plait-echo-")
    assert token not in text, f"key leaked into: {text[:2000]}"


def test_echoed_key_is_masked_in_every_recorded_error(
    case: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    rows = ["a", "b", "c"]
    caplog.set_level(logging.DEBUG)

    async def main() -> tuple[BaseException, BaseException, list[Any], int]:
        async with LLMServer(require_api_key=KEY, faults=[Fault("echo_key", every=1)]) as srv:
            res = resources(srv, case, api_key=KEY, max_retries=1)
            with pytest.raises(NodeExecutionError) as single:
                await run(One(), "x", resources=res)
            with pytest.raises(BatchError) as batch:
                await run(One(), rows, resources=res)
            streamed = [r async for r in run(One(), rows, resources=res, streaming=True,
                                             checkpoint_dir=tmp_path / "ckpt")]
            return single.value, batch.value, streamed, srv.stats().client_errors

    single, batch, streamed, rejected = arun(main())
    assert rejected > 0  # the server really echoed the key back
    assert "Received Authorization" in str(single) or "x-api-key" in str(single)
    assert "***" in str(single)
    texts = [str(single), repr(single), str(single.__cause__), str(batch),
             *(str(e) for e in batch.failures.values()),
             *(str(r.error) for r in streamed)]
    assert all(r.error is not None for r in streamed)
    for text in texts:
        _assert_no_key(text)
    written = [p.read_bytes() for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]
    assert any(b"echo_key" in data and b"***" in data for data in written)  # recorded
    for data in written:
        _assert_no_key(data.decode("utf-8", "replace"))
    _assert_no_key(caplog.text)


def test_echoed_key_is_masked_in_the_parquet_error_column(
    case: tuple[str, str], tmp_path: Path,
) -> None:
    source = [{"text": f"row {i}"} for i in range(4)]

    with LLMServer(require_api_key=KEY, faults=[Fault("echo_key", every=1)]).run_in_thread() as srv:
        res = resources(srv, case, api_key=KEY, max_retries=0)
        summary = run_dataset_local(One(), source, tmp_path / "out", resources=res)
    assert summary.errors == 4
    table = read_output(tmp_path / "out")
    errors = [e for e in table.column("error").to_pylist() if e]
    assert len(errors) == 4 and all("***" in e for e in errors)
    for e in errors:
        _assert_no_key(e)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data
            if path.suffix == ".parquet":  # pages may be compressed: check decoded text too
                _assert_no_key(str(pq.read_table(path).to_pylist()))


def test_compressed_body_is_bounded_by_its_decoded_size(case: tuple[str, str]) -> None:
    """A tiny gzip body may inflate to gigabytes: the clients count decoded bytes."""
    limit = 1 << 20

    async def main() -> BaseException:
        async with LLMServer(faults=[Fault("gzip_bomb", every=1, body_bytes=32 << 20)]) as srv:
            res = resources(srv, case, max_retries=0, max_response_bytes=limit)
            with pytest.raises(NodeExecutionError) as info:
                await run(One(), "x", resources=res)
            return info.value

    error = arun(main())
    assert isinstance(error.cause, ResponseFormatError)
    assert f"max_response_bytes={limit}" in str(error)


def test_compressed_replies_still_decode(case: tuple[str, str]) -> None:
    """Below the limit a gzip reply is decoded as usual (the bound decodes it once)."""

    async def main() -> Any:
        async with LLMServer(faults=[Fault("gzip_bomb", body_bytes=1 << 20)]) as srv:
            manager = ResourceManager(resources(srv, case, max_retries=0))
            try:
                response, _ = await manager.pool("fast").call(LLMRequest("x"))
                return response
            finally:
                await manager.aclose()

    response = arun(main())
    assert response.text == " " * (1 << 20) and not response.usage.known
