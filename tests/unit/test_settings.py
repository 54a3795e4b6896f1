"""ExecutionSettings and priority resolution: call kwargs > bind > ExecutionSettings > defaults."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from plait import ExecutionSettings, LLMInference, Module, ResourceConfig, run
from plait.errors import ConfigError
from plait.execution.settings import (
    ResolvedSettings,
    current_settings,
    normalize,
    resolve_settings,
)
from plait.resources import OpenAIEndpointConfig


def res(model: str, limit: int | None = 16) -> ResourceConfig:
    return ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(model=model,
                                                                  max_concurrent=limit)})


class One(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> Any:
        return self.llm(text)


def test_defaults() -> None:
    settings, ctx = resolve_settings({}, None)
    assert ctx is None
    assert settings == ResolvedSettings()
    assert settings.executor == "local" and settings.resume == "auto"
    assert not settings.streaming and not settings.preserve_order and not settings.profile


def test_priority_call_over_bind_over_context_over_defaults() -> None:
    with ExecutionSettings(resources=res("ctx"), max_inflight=1, preserve_order=True) as ctx:
        assert current_settings() is ctx
        only_ctx, _ = resolve_settings({}, None)
        assert only_ctx.resources["fast"].model == "ctx" and only_ctx.max_inflight == 1
        bound, _ = resolve_settings({}, {"resources": res("bind"), "max_inflight": 2})
        assert bound.resources["fast"].model == "bind" and bound.max_inflight == 2
        assert bound.preserve_order  # not overridden: the context's value stays
        called, _ = resolve_settings({"max_inflight": 3}, {"max_inflight": 2})
        assert called.max_inflight == 3 and called.resources["fast"].model == "ctx"
    assert current_settings() is None


def test_inner_execution_settings_win_and_are_restored() -> None:
    with ExecutionSettings(max_inflight=1):
        with ExecutionSettings(max_inflight=5):
            assert resolve_settings({}, None)[0].max_inflight == 5
        assert resolve_settings({}, None)[0].max_inflight == 1


def test_async_with_and_task_isolation() -> None:
    async def main() -> tuple[int | None, int | None]:
        async def other_task() -> int | None:
            return resolve_settings({}, None)[0].max_inflight

        task = asyncio.create_task(other_task())  # created before the block: not affected
        async with ExecutionSettings(max_inflight=7):
            inside = resolve_settings({}, None)[0].max_inflight
            before = await task
        return inside, before

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (7, None)


def test_bind_and_run_record_settings_without_running() -> None:
    module = One().bind(resources=res("b"), max_inflight=4)
    assert module.__dict__["_bound"]["max_inflight"] == 4
    pending = run(module, "x", streaming=True)
    assert pending.overrides == {"streaming": True}
    pending.close()  # never run: closing it says so (an unclosed, unawaited call warns)


def test_every_resolved_setting_is_a_valid_key() -> None:
    names = [f.name for f in dataclasses.fields(ResolvedSettings)]
    ExecutionSettings.check_keys(dict.fromkeys(names))
    with pytest.raises(ConfigError) as info:
        ExecutionSettings(max_inflight=1, stream=True)
    assert "['stream']" in str(info.value) and "'streaming'" in str(info.value)


def test_normalize_coerces_paths_and_yaml(tmp_path: Path) -> None:
    yaml_path = tmp_path / "r.yaml"
    yaml_path.write_text("endpoints:\n  fast: {provider_api: openai, model: y}\n")
    out = normalize({"resources": str(yaml_path), "checkpoint_dir": "ck",
                     "profile_path": "t.json"})
    assert out["resources"]["fast"].model == "y"
    assert out["checkpoint_dir"] == Path("ck") and out["profile_path"] == Path("t.json")
    as_dict = normalize({"resources": {"endpoints": {"fast": {"provider_api": "openai",
                                                              "model": "d"}}}})
    assert as_dict["resources"]["fast"].model == "d"


def test_profile_path_turns_profiling_on_unless_said_otherwise() -> None:
    assert resolve_settings({"profile_path": "t.json"}, None)[0].profile
    assert not resolve_settings({"profile_path": "t.json", "profile": False}, None)[0].profile


@pytest.mark.parametrize("key", ["max_inflight", "max_concurrent"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_limits_must_be_positive_integers(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be an integer >= 1"):
        ExecutionSettings(**{key: value})


def test_bad_values_fail_at_bind_time() -> None:
    with pytest.raises(ConfigError, match="max_inflight must be"):
        One().bind(max_inflight=0)
    with pytest.raises(ConfigError, match="resume must be"):
        One().bind(resume="later")


def test_inflight_limit_default_scales_with_endpoint_limits() -> None:
    assert ResolvedSettings().inflight_limit() == 64
    assert ResolvedSettings(resources=res("m", 50)).inflight_limit() == 200
    assert ResolvedSettings(resources=res("m", None)).inflight_limit() == 256
    assert ResolvedSettings(max_inflight=3).inflight_limit() == 3


def test_settings_cannot_be_entered_twice() -> None:
    settings = ExecutionSettings()
    with settings, pytest.raises(ConfigError, match="already active"):
        settings.__enter__()


def test_nested_execution_settings_inherit_what_they_do_not_set() -> None:
    outer_res = res("outer")
    with ExecutionSettings(resources=outer_res, max_inflight=2) as outer:
        with ExecutionSettings(preserve_order=True) as inner:
            settings, ctx = resolve_settings({}, None)
            assert ctx is inner
            assert settings.resources is outer_res and settings.max_inflight == 2
            assert settings.preserve_order
            # Same endpoints, same owner: the inner block shares the outer resource manager.
            assert inner.shared is outer.shared and inner.shared is not None
            assert inner.shared.owns(settings)
        with ExecutionSettings(resources=res("inner")) as other:
            assert resolve_settings({}, None)[0].resources["fast"].model == "inner"
            assert other.shared is not outer.shared
        assert outer.shared is not None  # the inner blocks did not close the outer manager
        assert not resolve_settings({}, None)[0].preserve_order
