"""A stand-in for ``vllm.LLM`` with the same small interface, for tests without vLLM.

``VLLMEndpointConfig(model="fake", engine_factory="plait.local_models.fakes:fake_vllm_engine")``
runs the whole local-model path (batching, routing, replicas, token usage) with an engine
that echoes each prompt, reversed, cut to ``max_tokens`` characters. It records every batch
it was given, so tests can see the micro-batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plait.local_models.tiny import CharTokenizer

__all__ = ["FakeSamplingParams", "FakeVLLMEngine", "fake_vllm_engine"]


@dataclass(frozen=True)
class FakeSamplingParams:
    """The ``vllm.SamplingParams`` keywords plait sets."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None


@dataclass(frozen=True)
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass(frozen=True)
class _RequestOutput:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[_Completion]


@dataclass
class FakeVLLMEngine:
    """Answers like ``vllm.LLM.generate``: one ``RequestOutput``-shaped object per prompt."""

    tokenizer: CharTokenizer = field(default_factory=CharTokenizer)
    batches: list[int] = field(default_factory=list[int])

    def generate(self, prompts: Sequence[str], sampling_params: Sequence[FakeSamplingParams],
                 use_tqdm: bool = False) -> list[_RequestOutput]:
        """Reverse each prompt, cut to its ``max_tokens``."""
        del use_tqdm
        self.batches.append(len(prompts))
        outputs: list[_RequestOutput] = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            reply = prompt[::-1][: params.max_tokens]
            finish = "length" if len(prompt) > params.max_tokens else "stop"
            ids = self.tokenizer.encode(reply)
            outputs.append(_RequestOutput(prompt, self.tokenizer.encode(prompt),
                                          [_Completion(reply, ids, finish)]))
        return outputs


def fake_vllm_engine(config: Any) -> tuple[FakeVLLMEngine, Callable[..., FakeSamplingParams]]:
    """An ``engine_factory`` for ``VLLMEndpointConfig``: the fake engine and its params."""
    del config
    return FakeVLLMEngine(), FakeSamplingParams
