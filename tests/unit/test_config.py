"""ResourceConfig / EndpointConfig: validation, YAML, keys kept out of pickles (no sockets)."""

from __future__ import annotations

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
        ("rate_limit", 0, "rate_limit must be >= 1"),
        ("tokens_per_minute", -1.0, "tokens_per_minute must be >= 1"),
        ("max_concurrent", True, "max_concurrent must be a number or None"),
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
