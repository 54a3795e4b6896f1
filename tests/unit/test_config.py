"""ResourceConfig / EndpointConfig: validation, YAML, keys kept out of pickles (no sockets)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from plait import AnthropicEndpointConfig, EndpointConfig, OpenAIEndpointConfig, ResourceConfig
from plait.errors import ConfigError, MissingAPIKeyError


def test_provider_defaults() -> None:
    openai = OpenAIEndpointConfig(model="gpt-4o-mini")
    assert openai.provider_api == "openai"
    assert openai.resolved_base_url == "https://api.openai.com/v1"
    assert openai.key_env_var == "OPENAI_API_KEY"
    anthropic = AnthropicEndpointConfig(model="claude")
    assert anthropic.resolved_base_url == "https://api.anthropic.com"
    assert anthropic.key_env_var == "ANTHROPIC_API_KEY"
    vllm = EndpointConfig(provider_api="vllm", model="m", base_url="http://h:8000/v1/")
    assert vllm.resolved_base_url == "http://h:8000/v1" and vllm.key_env_var is None
    assert vllm.resolve_api_key() is None


def test_api_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = OpenAIEndpointConfig(model="m")
    with pytest.raises(MissingAPIKeyError) as info:
        cfg.resolve_api_key("fast")
    assert info.value.env_var == "OPENAI_API_KEY" and info.value.alias == "fast"
    assert "api_key=" in str(info.value)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert cfg.resolve_api_key() == "from-env"
    assert OpenAIEndpointConfig(model="m", api_key="inline").resolve_api_key() == "inline"
    monkeypatch.setenv("MY_KEY", "custom")
    assert OpenAIEndpointConfig(model="m", api_key_env="MY_KEY").resolve_api_key() == "custom"


def test_inline_keys_never_leave_the_process() -> None:
    cfg = OpenAIEndpointConfig(model="m", api_key="secret")
    assert "secret" not in repr(cfg)
    assert pickle.loads(pickle.dumps(cfg)).api_key is None
    assert cfg.to_dict()["api_key"] is None
    assert b"secret" not in pickle.dumps(ResourceConfig(endpoints={"fast": cfg}))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_concurrent", 0, "max_concurrent must be >= 1, got 0. No limit: use None."),
        ("max_concurrent", -3, "max_concurrent must be >= 1, got -3"),
        ("rate_limit", 0, "rate_limit must be > 0, got 0. No limit: use None."),
        ("tokens_per_minute", -1.0, "tokens_per_minute must be > 0"),
        ("max_concurrent", True, "max_concurrent must be a whole number or None, got True"),
        ("max_retries", -1, "max_retries must be >= 0"),
        ("timeout", 0, "timeout must be > 0"),
        ("transport", "grpc", "transport must be 'aiohttp' or 'sdk'"),
        ("model", "", "model must be a non-empty string"),
    ],
)
def test_invalid_endpoint_values(field: str, value: object, words: str) -> None:
    kwargs = {"model": "m", field: value}
    with pytest.raises(ConfigError) as info:
        EndpointConfig(provider_api="openai", **kwargs)  # pyright: ignore[reportArgumentType]
    assert words in str(info.value)


def test_none_means_no_limit() -> None:
    cfg = OpenAIEndpointConfig(model="m", max_concurrent=None, rate_limit=None)
    assert cfg.max_concurrent is None and cfg.rate_limit is None


def test_resource_config_from_dict_and_lookup() -> None:
    config = ResourceConfig.from_dict({"endpoints": {
        "fast": {"provider_api": "openai", "model": "a", "max_concurrent": 3},
        "smart": OpenAIEndpointConfig(model="b"),
    }})
    assert config.aliases() == ["fast", "smart"] and "fast" in config
    assert config["fast"].max_concurrent == 3 and config["smart"].model == "b"
    with pytest.raises(ConfigError) as info:
        config["slow"]
    assert "'slow'" in str(info.value) and "['fast', 'smart']" in str(info.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"endpoints": {"fast": {"provider_api": "openai", "model": "m", "rpm": 1}}},
         "Unknown key(s) ['rpm'] in endpoint 'fast'"),
        ({"endpoints": {"fast": {"model": "m"}}}, "needs 'provider_api'"),
        ({"endpoints": {}, "extra": 1}, "Unknown key(s) ['extra'] in resource config"),
        ({"endpoints": ["fast"]}, "'endpoints' must map alias -> endpoint settings"),
        (["endpoints"], "must be a mapping with key 'endpoints'"),
        ({"endpoints": {"fast": 3}}, "Endpoint 'fast' must be an EndpointConfig"),
        ({"endpoints": {"": {"provider_api": "openai", "model": "m"}}},
         "aliases must be non-empty strings"),
    ],
)
def test_invalid_resource_dicts(data: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        ResourceConfig.from_dict(data)  # pyright: ignore[reportArgumentType]
    assert words in str(info.value)


def test_yaml_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("endpoints:\n  fast: {provider_api: openai, model: a, max_concurrent: 8}\n"
                    "  claude: {provider_api: anthropic, model: c}\n")
    config = ResourceConfig.from_yaml(good)
    assert config["fast"].max_concurrent == 8 and config["claude"].provider_api == "anthropic"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert ResourceConfig.from_yaml(empty).aliases() == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [unclosed\n")
    with pytest.raises(ConfigError, match=r"Malformed YAML in .*bad\.yaml"):
        ResourceConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match=r"Cannot read resource config .*missing\.yaml"):
        ResourceConfig.from_yaml(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("endpoints:\n  fast: {provider_api: openai, model: a, speed: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: Unknown key\(s\) \['speed'\]"):
        ResourceConfig.from_yaml(unknown)


def test_provider_configs_are_classes() -> None:
    openai = OpenAIEndpointConfig("gpt-4o-mini", max_concurrent=4)
    anthropic = AnthropicEndpointConfig(model="claude")
    assert isinstance(openai, OpenAIEndpointConfig) and isinstance(openai, EndpointConfig)
    assert isinstance(anthropic, AnthropicEndpointConfig)
    assert not isinstance(openai, AnthropicEndpointConfig)
    assert openai.provider_api == "openai" and anthropic.provider_api == "anthropic"
    replaced = dataclasses.replace(openai, timeout=5.0)
    assert type(replaced) is OpenAIEndpointConfig and replaced.timeout == 5.0
    restored = pickle.loads(pickle.dumps(anthropic))
    assert type(restored) is AnthropicEndpointConfig and restored == anthropic
    vllm = OpenAIEndpointConfig("m", provider_api="vllm", base_url="http://h:8000/v1")
    assert vllm.key_env_var is None
    with pytest.raises(ConfigError, match="AnthropicEndpointConfig speaks the Anthropic"):
        AnthropicEndpointConfig(model="m", provider_api="openai")
    with pytest.raises(ConfigError, match="OpenAIEndpointConfig speaks the OpenAI"):
        OpenAIEndpointConfig(model="m", provider_api="anthropic")


def test_copies_keep_the_inline_key_pickles_drop_it() -> None:
    cfg = OpenAIEndpointConfig(model="m", api_key="sk-inline-0123456789")
    assert copy.deepcopy(cfg).api_key == "sk-inline-0123456789"
    assert copy.copy(cfg).api_key == "sk-inline-0123456789"
    res = copy.deepcopy(ResourceConfig(endpoints={"fast": cfg}))
    assert res["fast"].api_key == "sk-inline-0123456789"
    assert pickle.loads(pickle.dumps(cfg)).api_key is None  # never shipped


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"timeout": "30"}, "timeout must be a number, got '30' (str). Write timeout=30"),
        ({"timeout": float("inf")}, "timeout must be finite"),
        ({"max_retries": 2.5}, "max_retries must be a whole number"),
        ({"max_response_bytes": 0}, "max_response_bytes must be >= 1"),
        ({"input_cost_per_1m": "1.5"}, "input_cost_per_1m must be a number"),
        ({"base_url": "api.openai.com/v1"}, "base_url='https://api.openai.com/v1'"),
        ({"base_url": "ftp://h/v1"}, "only 'http' and 'https'"),
        ({"base_url": "http:///v1"}, "has no host"),
        ({"base_url": " http://h/v1"}, "whitespace"),
        ({"api_key": "sk-abcdefgh\n"}, "contains a newline at its end"),
        ({"api_key": " sk-abcdefgh"}, "whitespace at its start"),
        ({"api_key": "sk-abc\u201cdefgh"}, "a non-ASCII character at position 6"),
        ({"api_key": 123}, "api_key must be a string or None, got int"),
    ],
)
def test_values_that_cannot_work_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        EndpointConfig(provider_api="openai", model="m", **kwargs)  # pyright: ignore[reportArgumentType]
    assert words in str(info.value)
    if "api_key" in kwargs:
        assert "abcdefgh" not in str(info.value)  # the key is never quoted


def test_key_from_the_environment_is_checked_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIT_NL_KEY", "sk-from-env-abcdef\r\n")
    cfg = OpenAIEndpointConfig(model="m", api_key_env="PLAIT_NL_KEY")
    with pytest.raises(ConfigError) as info:
        cfg.resolve_api_key("fast")
    assert "environment variable PLAIT_NL_KEY (endpoint 'fast')" in str(info.value)
    assert "sk-from-env" not in str(info.value)


def test_a_withheld_inline_key_says_so_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAIT_WITHHELD_KEY", raising=False)
    cfg = OpenAIEndpointConfig(model="m", api_key="sk-inline-0123456789",
                               api_key_env="PLAIT_WITHHELD_KEY")
    shipped = pickle.loads(pickle.dumps(cfg))  # what a Ray worker or a checkpoint gets
    assert shipped.api_key is None and shipped == cfg
    with pytest.raises(MissingAPIKeyError) as info:
        shipped.resolve_api_key("fast")
    assert "api_key=... where it was made" in str(info.value)
    assert "never sent to another process" in str(info.value)
    assert "sk-inline" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.inline_withheld
    assert "_inline_key_withheld" not in shipped.to_dict()
    assert EndpointConfig.from_dict(shipped.to_dict()) == cfg
    plain = pickle.loads(pickle.dumps(OpenAIEndpointConfig(model="m",
                                                           api_key_env="PLAIT_WITHHELD_KEY")))
    with pytest.raises(MissingAPIKeyError) as info:
        plain.resolve_api_key("fast")
    assert "Set it or pass api_key=" in str(info.value)
