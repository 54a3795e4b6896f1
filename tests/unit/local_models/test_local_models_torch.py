"""The Torch adapter with a tiny char-level LM built in code (real torch, CPU, no download)."""

from __future__ import annotations

from typing import Any

import pytest

from plait.errors import ConfigError
from plait.local_models import GenerationRequest, TorchEndpointConfig
from plait.local_models.hf import load_hf_causal_lm
from plait.local_models.tiny import CharTokenizer
from plait.local_models.torch_adapter import TorchGenerator, import_torch

TINY = "plait.local_models.tiny:tiny_char_lm"


def _generator(**kwargs: Any) -> TorchGenerator:
    generator = TorchEndpointConfig(model_factory=TINY, **kwargs).load_generator()
    assert isinstance(generator, TorchGenerator)
    return generator


def _eos_after_two(model: Any, tokenizer: Any, prompt_ids: list[list[int]],
                   max_new_tokens: int, temperature: float, generator: Any) -> list[list[int]]:
    a, b = tokenizer.encode("ab")
    return [[a, b, tokenizer.eos_id, a] for _ in prompt_ids]


def _not_a_pair() -> str:
    return "model"


def test_char_tokenizer_round_trip_and_unknowns() -> None:
    tok = CharTokenizer()
    assert tok.decode(tok.encode("Hello, world!")) == "Hello, world!"
    assert tok.encode("é") == [tok.unk_id]
    assert tok.decode([tok.pad_id, tok.eos_id or 0, *tok.encode("x")]) == "x"


def test_greedy_generation_counts_tokens_with_the_tokenizer() -> None:
    gen = _generator()
    out = gen.generate([GenerationRequest("hello", 7, 0.0), GenerationRequest("hi", 3, 0.0)])
    assert [g.input_tokens for g in out] == [5, 2]
    assert [g.output_tokens for g in out] == [7, 3]
    assert [len(g.text) for g in out] == [7, 3]
    assert all(g.finish_reason == "length" for g in out)


def test_batched_output_equals_one_at_a_time() -> None:
    gen = _generator()
    prompts = ["a", "a longer prompt", "mid length"]
    batched = gen.generate([GenerationRequest(p, 6, 0.0) for p in prompts])
    single = [gen.generate([GenerationRequest(p, 6, 0.0)])[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]


def test_sampling_is_seeded_and_mixed_temperatures_share_a_batch() -> None:
    batch = [GenerationRequest("x", 8, 1.0), GenerationRequest("x", 8, 0.0),
             GenerationRequest("y", 8, 0.7)]
    first = _generator(seed=3).generate(batch)
    second = _generator(seed=3).generate(batch)
    assert [g.text for g in first] == [g.text for g in second]
    assert [g.output_tokens for g in first] == [8, 8, 8]


def test_generate_fn_and_eos_stop() -> None:
    gen = _generator(generate_fn=_eos_after_two)
    (out,) = gen.generate([GenerationRequest("q", 10, 0.0)])
    assert (out.text, out.output_tokens, out.finish_reason) == ("ab", 3, "stop")


def test_dtype_option() -> None:
    torch = import_torch()
    gen = _generator(dtype="float64")
    assert next(gen.model.parameters()).dtype == torch.float64
    with pytest.raises(ConfigError, match="not a torch dtype"):
        _generator(dtype="float99")


def test_load_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cannot import module"):
        TorchEndpointConfig(model_factory="no_such_module_xyz:f").load_generator()
    with pytest.raises(ConfigError, match="has no 'missing'"):
        TorchEndpointConfig(model_factory="plait.local_models.tiny:missing").load_generator()
    with pytest.raises(ConfigError, match="must return \\(model, tokenizer\\)"):
        TorchEndpointConfig(model_factory=_not_a_pair).load_generator()


def test_cuda_without_a_gpu_says_so() -> None:
    if import_torch().cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        TorchEndpointConfig(model_factory=TINY, device="cuda").load_generator()


def test_hf_path_must_be_a_local_directory(tmp_path: Any) -> None:
    # The transformers path itself is not run here (not installed; weights never fetched).
    with pytest.raises(ConfigError, match="not a local directory"):
        load_hf_causal_lm(str(tmp_path / "missing"), None)
    with pytest.raises(ConfigError, match="not a local directory"):
        TorchEndpointConfig(hf_path=str(tmp_path / "missing")).load_generator()
