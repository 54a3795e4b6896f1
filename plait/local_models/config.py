"""Endpoint configs for models that run inside plait's own processes (Torch, vLLM).

They sit in a ``ResourceConfig`` beside hosted endpoints; ``LLMInference(alias=...)`` uses
them unchanged. Each config names its model by an import path or a local directory, never
by holding weights, so it pickles small (into checkpoints and Ray objects) and the model is
loaded where it runs: in-process by the local executor (``LocalModelClient``), or once per
GPU-pinned replica actor on Ray (``plait_ray.replicas``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from plait.errors import ConfigError

if TYPE_CHECKING:
    from plait.clients.base import LLMClient
    from plait.local_models.generation import Generator

__all__ = ["LocalModelConfig", "TorchEndpointConfig", "VLLMEndpointConfig"]

#: "package.module:function" or a callable; resolved where the model is loaded.
FactorySpec = str | Callable[..., Any]


@dataclass(frozen=True, kw_only=True)
class LocalModelConfig:
    """Settings shared by every local-model endpoint.

    Args:
        max_new_tokens: Tokens generated per request when the request sets no ``max_tokens``.
        temperature: Overrides every request's temperature when set (0 = greedy); None uses
            the request's (``LLMInference``'s) temperature.
        seed: Seed of the sampler, for reproducible sampling; None for a random one.
        max_batch: The most requests per generate call (micro-batching).
        max_wait_ms: How long the first request of a batch waits for company.
        replicas: On Ray, how many replica actors serve this alias.
        num_gpus_per_replica: On Ray, GPUs per replica (fractional shares one GPU; 0 runs
            the replica on CPU nodes).
        num_cpus_per_replica: On Ray, CPUs reserved per replica.
        max_restarts: On Ray, how often Ray restarts a replica that died.
        max_concurrent: Requests in flight at once, or None for no limit beyond batching.
        rate_limit: Requests per minute, or None.
        tokens_per_minute: Tokens per minute, or None.
        max_retries: Retries of a retryable failure (a replica died, a transient error).
        timeout: Seconds for one request once the model is loaded (queueing included).
        input_cost_per_1m: Cost of one million input tokens (for the run summary).
        output_cost_per_1m: Cost of one million output tokens.
    """

    provider_api: ClassVar[str] = "local"

    max_new_tokens: int = 128
    temperature: float | None = None
    seed: int | None = 0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    replicas: int = 1
    num_gpus_per_replica: float = 1.0
    num_cpus_per_replica: float = 1.0
    max_restarts: int = 3
    max_concurrent: int | None = None
    rate_limit: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 3
    timeout: float = 300.0
    input_cost_per_1m: float = 0.0
    output_cost_per_1m: float = 0.0

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("max_batch", self.max_batch, 1)
        _check_int("replicas", self.replicas, 1)
        _check_int("max_restarts", self.max_restarts, 0)
        _check_int("max_retries", self.max_retries, 0)
        if self.max_concurrent is not None:
            _check_int("max_concurrent", self.max_concurrent, 1, " Use None for no limit.")
        if self.temperature is not None:
            _check_number("temperature", self.temperature, 0.0)
        _check_number("max_wait_ms", self.max_wait_ms, 0.0)
        _check_number("num_gpus_per_replica", self.num_gpus_per_replica, 0.0)
        _check_number("num_cpus_per_replica", self.num_cpus_per_replica, 0.0)
        if self.num_gpus_per_replica > 1 and not float(self.num_gpus_per_replica).is_integer():
            raise ConfigError(
                f"num_gpus_per_replica must be a whole number when above 1 (Ray cannot split "
                f"several GPUs), got {self.num_gpus_per_replica}. Use e.g. 2 or 0.5."
            )
        for name in ("rate_limit", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, 0.0, exclusive=True, hint=" Use None for no limit.")
        _check_number("timeout", self.timeout, 0.0, exclusive=True)

    @property
    def model_name(self) -> str:
        """A readable name of the model, reported as ``LLMResponse.model``."""
        raise NotImplementedError

    @property
    def gpus_per_replica(self) -> float:
        """GPUs one Ray replica reserves."""
        return self.num_gpus_per_replica

    def resolve_api_key(self, alias: str | None = None) -> None:
        """Local models need no key (``check_credentials`` calls this)."""
        del alias

    def create_client(self, alias: str) -> LLMClient:
        """The in-process client the local executor uses (``make_client`` calls this)."""
        from plait.local_models.client import LocalModelClient

        return LocalModelClient(self, alias)

    def load_generator(self) -> Generator:
        """Load the model (blocking, slow): call it off the event loop."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (callables shown by their import path)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in data.items():
            if callable(value):
                data[key] = _callable_name(value)
        return {"provider_api": self.provider_api, **data}


@dataclass(frozen=True, kw_only=True)
class TorchEndpointConfig(LocalModelConfig):
    """A PyTorch causal LM run by plait, in-process or in GPU-pinned Ray replicas.

    Give exactly one of ``model_factory`` or ``hf_path``.

    Args:
        model_factory: ``"package.module:function"`` (or a module-level callable) returning
            ``(model, tokenizer)``. ``model(input_ids)`` returns logits ``[batch, time,
            vocab]`` (or an object with ``.logits``); the tokenizer has ``encode(str) ->
            list[int]``, ``decode(list[int]) -> str``, ``pad_id`` and ``eos_id``.
        hf_path: A local directory holding a Hugging Face causal LM, loaded with
            ``transformers`` (``local_files_only``; plait never downloads weights).
        generate_fn: ``"module:function"`` or callable ``(model, tokenizer, prompt_ids,
            max_new_tokens, temperature, generator) -> list[list[int]]`` replacing the
            built-in sampling loop; it returns the new token ids of each prompt.
        device: "cpu", "cuda" or "cuda:N". On Ray, "cuda" is the replica's own GPU.
        dtype: A torch dtype name ("float16", "bfloat16", ...) or None to keep the model's.
        (the rest): see :class:`LocalModelConfig`.

    Example:
        >>> resources = ResourceConfig(endpoints={
        ...     "local": TorchEndpointConfig(
        ...         model_factory="plait.local_models.tiny:tiny_char_lm", device="cpu"),
        ... })
    """

    provider_api: ClassVar[str] = "torch"

    model_factory: FactorySpec | None = None
    hf_path: str | None = None
    generate_fn: FactorySpec | None = None
    device: str = "cpu"
    dtype: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.model_factory is None) == (self.hf_path is None):
            raise ConfigError(
                "TorchEndpointConfig needs exactly one of model_factory= "
                "('package.module:function' returning (model, tokenizer)) or hf_path= "
                f"(a local Hugging Face model directory); got model_factory="
                f"{self.model_factory!r}, hf_path={self.hf_path!r}."
            )
        if self.model_factory is not None:
            _check_factory("model_factory", self.model_factory)
        if self.generate_fn is not None:
            _check_factory("generate_fn", self.generate_fn)
        if self.hf_path is not None and (not isinstance(self.hf_path, str) or not self.hf_path):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"hf_path must be a non-empty path string, got {self.hf_path!r}.")
        device = self.device
        if not (device in ("cpu", "cuda") or (device.startswith("cuda:")
                                              and device[5:].isdigit())):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}.")

    @property
    def model_name(self) -> str:
        """The factory's import path, or the Hugging Face directory."""
        if self.hf_path is not None:
            return self.hf_path
        assert self.model_factory is not None  # one of the two is set (checked above)
        return _callable_name(self.model_factory)

    def load_generator(self) -> Generator:
        """Import torch, build or load the model and move it to ``device``."""
        from plait.local_models.torch_adapter import load_torch_generator

        return load_torch_generator(self)


@dataclass(frozen=True, kw_only=True)
class VLLMEndpointConfig(LocalModelConfig):
    """A model served by an in-process vLLM engine (``vllm.LLM``), one per replica.

    Args:
        model: A local model directory (or a name vLLM resolves from its own cache).
        tensor_parallel_size: GPUs one engine spans; on Ray each replica reserves
            ``max(num_gpus_per_replica, tensor_parallel_size)`` GPUs.
        dtype: vLLM's ``dtype`` ("auto", "float16", ...).
        gpu_memory_utilization: Fraction of each GPU the engine may use.
        max_model_len: Context length cap, or None for the model's.
        top_p: Sampling ``top_p`` for every request.
        engine_kwargs: Extra keyword arguments for ``vllm.LLM``.
        engine_factory: ``"module:function"`` or callable ``(config) -> (engine,
            make_sampling_params)`` replacing ``vllm.LLM``/``vllm.SamplingParams`` (tests use
            ``plait.local_models.fakes:fake_vllm_engine``).
        (the rest): see :class:`LocalModelConfig`.
    """

    provider_api: ClassVar[str] = "vllm-local"

    model: str
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    top_p: float = 1.0
    engine_kwargs: tuple[tuple[str, Any], ...] = ()
    engine_factory: FactorySpec | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.model, str) or not self.model:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"model must be a non-empty path string, got {self.model!r}.")
        _check_int("tensor_parallel_size", self.tensor_parallel_size, 1)
        if self.max_model_len is not None:
            _check_int("max_model_len", self.max_model_len, 1)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}."
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if isinstance(self.engine_kwargs, dict):
            # A dict is the natural spelling; stored as pairs so the config stays hashable.
            object.__setattr__(self, "engine_kwargs", tuple(sorted(self.engine_kwargs.items())))  # pyright: ignore[reportUnknownArgumentType]
        if self.engine_factory is not None:
            _check_factory("engine_factory", self.engine_factory)

    @property
    def model_name(self) -> str:
        """The model directory."""
        return self.model

    @property
    def gpus_per_replica(self) -> float:
        """GPUs one replica reserves: a tensor-parallel engine needs all of its GPUs."""
        return max(self.num_gpus_per_replica, float(self.tensor_parallel_size))

    def load_generator(self) -> Generator:
        """Import vllm and start the engine (slow: compiles and allocates the KV cache)."""
        from plait.local_models.vllm_adapter import load_vllm_generator

        return load_vllm_generator(self)


def _check_int(name: str, value: object, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}.{hint}")


def _check_number(name: str, value: object, minimum: float, *, exclusive: bool = False,
                  hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}.")
    if value < minimum or (exclusive and value == minimum):
        op = ">" if exclusive else ">="
        raise ConfigError(f"{name} must be {op} {minimum}, got {value}.{hint}")


def _check_factory(name: str, spec: object) -> None:
    if callable(spec):
        return
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(
            f"{name} must be 'package.module:function' or a callable, got {spec!r}. "
            f"Example: {name}='plait.local_models.tiny:tiny_char_lm'."
        )


def _callable_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"
