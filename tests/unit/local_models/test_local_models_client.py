"""The in-process path: LocalModelClient batching, timeouts, errors, and a pipeline using it.

vLLM is exercised through ``plait.local_models.fakes`` (same small engine interface); the
real-engine test runs only where vllm is importable.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from plait import LLMInference, Module
from plait.clients.base import LLMRequest
from plait.errors import APITimeoutError, ConfigError, ServerError
from plait.local_models import LocalModelClient, TorchEndpointConfig, VLLMEndpointConfig
from plait.local_models.fakes import FakeVLLMEngine
from plait.local_models.vllm_adapter import VLLMGenerator
from plait.resources.config import ResourceConfig

TINY = "plait.local_models.tiny:tiny_char_lm"
FAKE_VLLM = "plait.local_models.fakes:fake_vllm_engine"
BOUND_S = 60.0  # every wait here ends by then, pass or fail


def _sync(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest async plugin needed)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))
    return run


def _crash(*args: Any) -> list[list[int]]:
    raise RuntimeError("CUDA out of memory (simulated)")


def _hang(*args: Any) -> list[list[int]]:
    import threading

    threading.Event().wait(2.0)
    return [[] for _ in args[2]]


def _broken_factory() -> Any:
    raise RuntimeError("weights are corrupt")


async def _complete_all(client: LocalModelClient, prompts: list[str], **kw: Any) -> list[Any]:
    async with asyncio.timeout(BOUND_S):
        return await asyncio.gather(*(
            client.complete(LLMRequest(prompt=p, temperature=0.0, **kw), timeout=BOUND_S)
            for p in prompts))


@_sync
async def test_concurrent_requests_are_micro_batched_with_usage() -> None:
    client = LocalModelClient(TorchEndpointConfig(model_factory=TINY, max_new_tokens=4,
                                                  max_batch=8, max_wait_ms=50), "local")
    try:
        prompts = [f"prompt {i}" for i in range(20)]
        responses = await _complete_all(client, prompts)
        stats = client.runner.stats()
    finally:
        await client.aclose()
    assert stats.items == 20 and stats.batches < 20
    assert all(r.usage.input_tokens == len(p) for r, p in zip(responses, prompts, strict=True))
    assert all(r.usage.output_tokens == 4 and len(r.text) == 4 for r in responses)
    assert responses[0].model == TINY


@_sync
async def test_request_max_tokens_and_system_prompt() -> None:
    client = LocalModelClient(TorchEndpointConfig(model_factory=TINY), "local")
    try:
        async with asyncio.timeout(BOUND_S):
            response = await client.complete(
                LLMRequest(prompt="hi", system_prompt="sys", max_tokens=5), timeout=BOUND_S)
    finally:
        await client.aclose()
    assert response.usage.input_tokens == len("sys\n\nhi")
    assert response.usage.output_tokens == 5


@_sync
async def test_generation_failure_is_a_retryable_server_error() -> None:
    client = LocalModelClient(
        TorchEndpointConfig(model_factory=TINY, generate_fn=_crash), "local")
    try:
        with pytest.raises(ServerError, match="out of memory") as info:
            await _complete_all(client, ["x"])
    finally:
        await client.aclose()
    assert info.value.retryable and info.value.alias == "local"


@_sync
async def test_load_failure_is_a_config_error() -> None:
    client = LocalModelClient(TorchEndpointConfig(model_factory=_broken_factory), "local")
    with pytest.raises(ConfigError, match="weights are corrupt"):
        await _complete_all(client, ["x"])
    await client.aclose()


@_sync
async def test_timeout_is_a_retryable_timeout_error() -> None:
    client = LocalModelClient(TorchEndpointConfig(model_factory=TINY, generate_fn=_hang),
                              "local")
    try:
        await client.runner.load()
        with pytest.raises(APITimeoutError) as info:
            await client.complete(LLMRequest(prompt="x"), timeout=0.05)
    finally:
        await client.aclose()
    assert info.value.retryable


class _Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.local = LLMInference(alias="local", temperature=0.0, max_tokens=6)

    def forward(self, text: str) -> Any:
        return self.local(text)


@_sync
async def test_pipeline_uses_a_local_alias_with_no_other_change() -> None:
    resources = ResourceConfig(endpoints={"local": TorchEndpointConfig(model_factory=TINY)})
    pipeline = _Echo().bind(resources=resources)
    async with asyncio.timeout(BOUND_S):
        outputs = await pipeline([f"row {i}" for i in range(12)])
    assert len(outputs) == 12 and all(len(o) == 6 for o in outputs)
    usage = pipeline.last_run.endpoints["local"]
    assert usage["output_tokens"] == 72
    assert usage["input_tokens"] == sum(len(f"row {i}") for i in range(12))


@_sync
async def test_vllm_config_with_a_fake_engine_batches_and_counts_tokens() -> None:
    client = LocalModelClient(VLLMEndpointConfig(model="fake", engine_factory=FAKE_VLLM,
                                                 max_batch=4, max_wait_ms=50), "v")
    try:
        responses = await _complete_all(client, ["abc", "hello", "x", "long prompt"],
                                        max_tokens=4)
        generator = client.runner._generator  # pyright: ignore[reportPrivateUsage]
    finally:
        await client.aclose()
    assert isinstance(generator, VLLMGenerator)
    assert [r.text for r in responses] == ["cba", "olle", "x", "tpmo"]
    assert [r.usage.input_tokens for r in responses] == [3, 5, 1, 11]
    assert [r.usage.output_tokens for r in responses] == [3, 4, 1, 4]
    assert [r.finish_reason for r in responses] == ["stop", "length", "stop", "length"]


def test_vllm_generator_passes_sampling_params_per_request() -> None:
    from plait.local_models import GenerationRequest
    from plait.local_models.fakes import FakeSamplingParams

    seen: list[Any] = []

    class Recording(FakeVLLMEngine):
        def generate(self, prompts: Any, sampling_params: Any, use_tqdm: bool = False) -> Any:
            seen.extend(sampling_params)
            return super().generate(prompts, sampling_params, use_tqdm)

    gen = VLLMGenerator(Recording(), FakeSamplingParams, top_p=0.9, seed=7)
    gen.generate([GenerationRequest("a", 3, 0.0), GenerationRequest("b", 9, 0.5)])
    assert seen == [FakeSamplingParams(0.0, 0.9, 3, 7), FakeSamplingParams(0.5, 0.9, 9, 7)]


def test_missing_vllm_gives_the_install_command() -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    with pytest.raises(ConfigError, match="pip install vllm"):
        VLLMEndpointConfig(model="/nonexistent").load_generator()


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_real_vllm_engine(tmp_path: Any) -> None:  # pragma: no cover - needs vllm + a model
    import os

    model_dir = os.environ.get("PLAIT_VLLM_TEST_MODEL")
    if not model_dir:
        pytest.skip("set PLAIT_VLLM_TEST_MODEL to a local model directory")
    from plait.local_models import GenerationRequest

    gen = VLLMEndpointConfig(model=model_dir, max_model_len=256).load_generator()
    out = gen.generate([GenerationRequest("Hello", 4, 0.0), GenerationRequest("Hi", 2, 0.0)])
    assert [g.output_tokens for g in out] == [4, 2]
    assert all(g.input_tokens > 0 for g in out)
