"""Local-model endpoint configs: validation, pickling without weights, client dispatch."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from plait.clients.factory import check_credentials, make_client
from plait.errors import ConfigError
from plait.local_models import (
    LocalModelClient,
    TorchEndpointConfig,
    VLLMEndpointConfig,
    is_local_model,
)
from plait.resources.config import OpenAIEndpointConfig, ResourceConfig

TINY = "plait.local_models.tiny:tiny_char_lm"


def test_configs_sit_in_a_resource_config_beside_hosted_ones() -> None:
    resources = ResourceConfig(endpoints={
        "hosted": OpenAIEndpointConfig(model="gpt-4o-mini", api_key="k"),
        "torch": TorchEndpointConfig(model_factory=TINY),
        "vllm": VLLMEndpointConfig(model="/models/x"),
    })
    assert resources["torch"].provider_api == "torch"
    assert resources["vllm"].provider_api == "vllm-local"
    assert is_local_model(resources["torch"]) and not is_local_model(resources["hosted"])


def test_config_pickles_small_without_weights() -> None:
    config = TorchEndpointConfig(model_factory=TINY, max_batch=8, replicas=2,
                                 num_gpus_per_replica=0.5)
    data = pickle.dumps(config)
    assert len(data) < 2_000
    assert pickle.loads(data) == config
    assert config.to_dict()["model_factory"] == TINY


def test_callable_factory_is_reported_by_import_path() -> None:
    from plait.local_models.tiny import tiny_char_lm

    config = TorchEndpointConfig(model_factory=tiny_char_lm)
    assert config.model_name == TINY
    assert pickle.loads(pickle.dumps(config)).model_factory is tiny_char_lm


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "exactly one of model_factory"),
    ({"model_factory": TINY, "hf_path": "/m"}, "exactly one of model_factory"),
    ({"model_factory": "no_colon"}, "'package.module:function'"),
    ({"model_factory": TINY, "device": "gpu"}, "device must be"),
    ({"model_factory": TINY, "max_batch": 0}, "max_batch must be >= 1"),
    ({"model_factory": TINY, "replicas": 0}, "replicas must be >= 1"),
    ({"model_factory": TINY, "num_gpus_per_replica": 1.5}, "whole number"),
    ({"model_factory": TINY, "num_gpus_per_replica": -1}, "num_gpus_per_replica"),
    ({"model_factory": TINY, "max_concurrent": 0}, "Use None for no limit"),
    ({"model_factory": TINY, "timeout": 0}, "timeout must be >"),
    ({"model_factory": TINY, "max_new_tokens": True}, "must be an integer"),
    ({"model_factory": TINY, "generate_fn": 3}, "generate_fn must be"),
])
def test_torch_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TorchEndpointConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": ""}, "model must be a non-empty"),
    ({"model": "m", "tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"model": "m", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"model": "m", "top_p": 0}, "top_p"),
    ({"model": "m", "engine_factory": "bad"}, "engine_factory must be"),
])
def test_vllm_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VLLMEndpointConfig(**kwargs)


def test_fractional_gpus_and_tensor_parallel_reservation() -> None:
    assert TorchEndpointConfig(model_factory=TINY, num_gpus_per_replica=0.25).gpus_per_replica \
        == 0.25
    config = VLLMEndpointConfig(model="m", tensor_parallel_size=2, num_gpus_per_replica=1,
                                engine_kwargs={"enforce_eager": True})  # pyright: ignore[reportArgumentType]
    assert config.gpus_per_replica == 2
    assert config.engine_kwargs == (("enforce_eager", True),)
    hash(config)


def test_make_client_dispatches_local_configs_and_needs_no_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config: Any = TorchEndpointConfig(model_factory=TINY)
    check_credentials(config, "local")  # no key, no error
    assert isinstance(make_client(config, "local"), LocalModelClient)
