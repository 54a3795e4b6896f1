"""The familiar surface: settings attributes, ResourceConfig as a mapping, Parameter updates,
TransientError, ``.message``, visualize_graph."""

from __future__ import annotations

from typing import Any

import pytest

import plait
from plait import ExecutionSettings, LLMInference, Module, Parameter, get_execution_settings
from plait.errors import (
    APITimeoutError,
    BadRequestError,
    ConfigError,
    NodeExecutionError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    TransientError,
    UnknownAliasError,
)
from plait.resources import OpenAIEndpointConfig, ResourceConfig


def test_settings_expose_fields_as_attributes_with_defaults() -> None:
    settings = ExecutionSettings(max_inflight=8, checkpoint_dir="ckpt")
    assert settings.max_inflight == 8
    assert str(settings.checkpoint_dir) == "ckpt"
    assert settings.max_concurrent is None and settings.resume == "auto"
    assert settings.executor == "local"
    with pytest.raises(AttributeError, match=r"Settings: .*max_inflight"):
        _ = settings.max_inflght


def test_settings_repr_and_the_active_settings() -> None:
    rc = ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(model="m")})
    assert get_execution_settings() is None
    with ExecutionSettings(resources=rc, max_inflight=8) as outer:
        assert get_execution_settings() is outer
        assert repr(outer) == ("ExecutionSettings(max_inflight=8, "
                               "resources=ResourceConfig(aliases=['fast'])) (active)")
        with ExecutionSettings(max_concurrent=2) as inner:
            assert get_execution_settings() is inner
            assert inner.max_inflight == 8  # inherited from the enclosing block
        assert get_execution_settings() is outer
    assert get_execution_settings() is None
    assert repr(outer) == ("ExecutionSettings(max_inflight=8, "
                           "resources=ResourceConfig(aliases=['fast']))")


def test_resource_config_is_a_read_only_mapping() -> None:
    fast, smart = OpenAIEndpointConfig(model="a"), OpenAIEndpointConfig(model="b")
    rc = ResourceConfig(endpoints={"fast": fast, "smart": smart})
    assert len(rc) == 2 and list(rc) == ["fast", "smart"] and list(rc.keys()) == ["fast", "smart"]
    assert dict(rc.items()) == {"fast": fast, "smart": smart}
    assert list(rc.values()) == [fast, smart]
    assert rc.get("fast") is fast and rc.get("nope") is None and rc.get("nope", 1) == 1
    assert "fast" in rc and "nope" not in rc
    assert rc["smart"] is smart
    with pytest.raises(KeyError, match=r"'missing' is not in the ResourceConfig .*\['fast', "
                                       r"'smart'\]") as info:
        rc["missing"]
    assert isinstance(info.value, ConfigError) and isinstance(info.value, UnknownAliasError)
    assert str(info.value).startswith("Alias 'missing'")  # not KeyError's quoted repr
    with pytest.raises(TypeError):
        rc["new"] = fast  # type: ignore[index]


def test_parameter_feedback_and_updates() -> None:
    p = Parameter("Be concise.", description="style of the answer")
    p.accumulate_feedback("Mention numbers.")
    p.accumulate_feedback("")
    assert p.feedback == ["Mention numbers."]
    p.apply_update("Be concise; keep numbers.")
    assert p.value == "Be concise; keep numbers." and p.feedback == []
    frozen = Parameter("x", requires_grad=False)
    frozen.accumulate_feedback("ignored")
    assert frozen.feedback == []
    with pytest.raises(ConfigError, match="must be a string, got int"):
        p.apply_update(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Feedback must be text"):
        p.accumulate_feedback(["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "transient"),
    [(RateLimitError("429"), True), (ServerError("500"), True),
     (APITimeoutError("slow"), True), (ResponseFormatError("bad json"), True),
     (BadRequestError("400"), False)],
)
def test_transient_errors_are_the_retryable_kinds(error: Any, transient: bool) -> None:
    assert isinstance(error, TransientError) is transient
    assert error.retryable is transient
    assert plait.TransientError is TransientError


def test_errors_keep_message() -> None:
    assert RateLimitError("slow down", status=429).message == "slow down"
    node_error = NodeExecutionError(node_id="n", module_path="m", module_type="LLMInference",
                                    alias="fast", source="x.py:1", cause=ValueError("boom"))
    assert node_error.message == str(node_error) and "boom" in node_error.message


class TwoStep(Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = LLMInference(alias="fast")
        self.b = LLMInference(alias="smart")

    def forward(self, text: str) -> Any:
        return self.b(f"Improve: {self.a(text)}")


def test_visualize_graph_renders_mermaid_and_dot() -> None:
    mermaid = plait.visualize_graph(TwoStep())
    assert mermaid.startswith("flowchart TD") and "fast" in mermaid and "smart" in mermaid
    graph = plait.trace(TwoStep())
    assert plait.visualize_graph(graph, "dot") == graph.to_dot()
    with pytest.raises(ConfigError, match="'mermaid' or 'dot'"):
        plait.visualize_graph(graph, "svg")  # type: ignore[arg-type]


def test_base_url_defaults_to_the_sdk_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plait.resources import EndpointConfig

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIEndpointConfig(model="m").resolved_base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    assert OpenAIEndpointConfig(model="m").resolved_base_url == "http://127.0.0.1:9/v1"
    anthropic = EndpointConfig(provider_api="anthropic", model="c")
    assert anthropic.resolved_base_url == "http://127.0.0.1:9"
    explicit = OpenAIEndpointConfig(model="m", base_url="http://x.test/v1")
    assert explicit.resolved_base_url == "http://x.test/v1"  # an explicit base_url wins
