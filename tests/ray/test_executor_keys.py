"""Workers never receive API keys: what the Ray executor ships contains no key."""

from __future__ import annotations

from ray import cloudpickle

from plait import LLMInference, Module
from plait.resources.config import OpenAIEndpointConfig, ResourceConfig
from plait_ray.runtime import RuntimeOptions
from plait_ray.worker import JobPayload

SECRET = "sk-test-never-shipped-7f3a"


class Pair(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = LLMInference(alias="fast")
        self.second = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.second(f"again: {self.first(text)}")


def resources() -> ResourceConfig:
    return ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(
        model="m", base_url="http://127.0.0.1:9/v1", api_key=SECRET, api_key_env="KEY_ENV")})


def test_row_worker_payload_has_no_key() -> None:
    res = resources()
    pipeline = Pair().bind(resources=res, executor="ray")
    payload = JobPayload(pipeline, pipeline.graph_for(1), res, RuntimeOptions(), workers=2,
                         namespace="plait-test")
    blob = cloudpickle.dumps(payload)
    assert SECRET.encode() not in blob
    assert b"KEY_ENV" in blob  # the worker reads the key from this variable instead
    restored = cloudpickle.loads(blob)
    assert restored.resources["fast"].api_key is None


def test_node_call_arguments_have_no_key() -> None:
    # A single call ships the job payload (above) and, per LLM node, its request.
    pipeline = Pair().bind(resources=resources())
    request = pipeline.first.build_request("again: x")
    blob = cloudpickle.dumps(("job-id", "second", request, 0))
    assert SECRET.encode() not in blob
