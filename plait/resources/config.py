"""Endpoint configuration, kept apart from module definitions.

Modules name an alias ("fast"); a ``ResourceConfig`` maps aliases to endpoints. The same
pipeline runs against OpenAI, Anthropic, a vLLM server or the offline ``plait.testing``
server by changing only this object (or the YAML it was loaded from).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from plait.batch_api._policy import BatchPolicy, as_policy
from plait.errors import ConfigError, MissingAPIKeyError, UnknownAliasError
from plait.resources._endpoint_checks import (
    check_base_url,
    check_key_text,
    check_number,
    check_optional_str,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AnthropicEndpointConfig",
    "EndpointConfig",
    "OpenAIEndpointConfig",
    "ProviderAPI",
    "ResourceConfig",
]

ProviderAPI = Literal["openai", "anthropic", "vllm"]
Transport = Literal["aiohttp", "sdk"]

_DEFAULT_KEY_ENV: dict[str, str | None] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "vllm": None,  # self-hosted servers usually take no key
}
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20
"""16 MiB: far above any chat reply, far below what an endless body would cost."""

_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
_DEFAULT_BASE_URL: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "vllm": None,
}


@dataclass(frozen=True, eq=True)
class EndpointConfig:
    """One LLM endpoint: where it is, how to authenticate, and its limits.

    Args:
        provider_api: Wire format: "openai", "anthropic" or "vllm" (OpenAI-compatible).
        model: The model name sent with each request.
        base_url: API base URL; defaults to the provider's public URL ("vllm" needs one).
        api_key: The key. Prefer leaving it None: it is then read from ``api_key_env`` in
            the process that makes the call, and never pickled, logged or checkpointed.
        api_key_env: Environment variable holding the key (provider default if None).
        max_concurrent: Requests in flight at once, or None for no limit.
        rate_limit: Requests per minute, or None for no limit.
        tokens_per_minute: Tokens (in + out, estimated before the call) per minute, or None.
        max_retries: Retries of a retryable failure (429, 5xx, connection, timeout, malformed).
        timeout: Seconds for one request, connect to last byte.
        input_cost_per_1m: Cost of one million input tokens, for the run summary.
        output_cost_per_1m: Cost of one million output tokens, for the run summary.
        transport: "aiohttp" (lean, default) or "sdk" (the official async SDK client).
        max_response_bytes: Largest response body accepted; a longer one fails that
            attempt (retried, like any malformed reply) instead of filling memory.
        max_retry_wait: Longest pause, in seconds, a server's retry hint may impose. A
            longer or absurd hint (``Retry-After: 99999``, a date next year, ``inf``) is
            capped to it, and a "warning" event says so.
        rate_limit_patience: Seconds a call keeps retrying 429s after its first one. A
            pause that would end later fails that row at once with ``RateLimitError``.
        batch: Send this endpoint's calls through the provider's batch API (OpenAI Batch,
            Anthropic Message Batches: about half the price, results within hours): True
            for the defaults, or a ``plait.batch_api.BatchPolicy`` (a dict in YAML). A
            run collects the ready calls of many rows into batches, polls them and
            journals their ids in ``checkpoint_dir`` so a killed run resumes them.
    """

    provider_api: ProviderAPI
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)
    api_key_env: str | None = None
    max_concurrent: int | None = 16
    rate_limit: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 5
    timeout: float = 60.0
    input_cost_per_1m: float = 0.0
    output_cost_per_1m: float = 0.0
    transport: Transport = "aiohttp"
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_retry_wait: float = 300.0
    rate_limit_patience: float = 600.0
    batch: bool | BatchPolicy = False

    def __post_init__(self) -> None:
        if self.provider_api not in _DEFAULT_KEY_ENV:
            raise ConfigError(
                f"provider_api must be one of {sorted(_DEFAULT_KEY_ENV)}, "
                f"got {self.provider_api!r}."
            )
        if not isinstance(self.model, str) or not self.model:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"model must be a non-empty string, got {self.model!r}.")
        if self.provider_api == "vllm" and not self.base_url:
            raise ConfigError(
                "provider_api='vllm' needs base_url, e.g. base_url='http://host:8000/v1'."
            )
        no_limit = "No limit: use None."
        check_number("max_concurrent", self.max_concurrent, integer=True, minimum=1,
                     optional=True, hint=no_limit)
        check_number("rate_limit", self.rate_limit, minimum=0, strict=True, optional=True,
                     hint=no_limit)
        check_number("tokens_per_minute", self.tokens_per_minute, minimum=0, strict=True,
                     optional=True, hint=no_limit)
        check_number("max_retries", self.max_retries, integer=True, minimum=0)
        check_number("timeout", self.timeout, minimum=0, strict=True,
                     hint="It is the seconds one request may take, e.g. timeout=60.")
        check_number("input_cost_per_1m", self.input_cost_per_1m, minimum=0)
        check_number("output_cost_per_1m", self.output_cost_per_1m, minimum=0)
        check_number("max_response_bytes", self.max_response_bytes, integer=True, minimum=1,
                     hint="It bounds one reply's body, e.g. max_response_bytes=16 * 2**20.")
        check_number("max_retry_wait", self.max_retry_wait, minimum=0)
        check_number("rate_limit_patience", self.rate_limit_patience, minimum=0)
        for name in ("base_url", "api_key", "api_key_env"):
            check_optional_str(name, getattr(self, name))
        if self.base_url is not None:
            check_base_url(self.base_url)
        if self.api_key:
            check_key_text(self.api_key, "api_key=...")
        policy = as_policy(self.batch)  # a dict (YAML) becomes a BatchPolicy
        if policy is not None and self.batch is not True:
            object.__setattr__(self, "batch", policy)
        if self.transport not in ("aiohttp", "sdk"):
            raise ConfigError(f"transport must be 'aiohttp' or 'sdk', got {self.transport!r}.")

    def __eq__(self, other: object) -> bool:
        # By value across the subclasses: OpenAIEndpointConfig(model="m") is the same
        # endpoint as EndpointConfig(provider_api="openai", model="m"). The key is left out,
        # as in the generated __hash__.
        if not isinstance(other, EndpointConfig):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name)
                   for f in dataclasses.fields(self) if f.compare)

    @property
    def resolved_base_url(self) -> str:
        """The base URL to call.

        ``base_url``, else ``$OPENAI_BASE_URL`` / ``$ANTHROPIC_BASE_URL`` (as the official SDKs
        read them), else the provider's public URL.
        """
        env = _BASE_URL_ENV.get(self.provider_api)
        url = self.base_url or (os.environ.get(env) if env else None) or _DEFAULT_BASE_URL[
            self.provider_api]
        assert url is not None  # vllm without base_url is rejected in __post_init__
        return url.rstrip("/")

    @property
    def key_env_var(self) -> str | None:
        """The environment variable the key is read from, or None if no key is needed."""
        return self.api_key_env or _DEFAULT_KEY_ENV[self.provider_api]

    def resolve_api_key(self, alias: str | None = None) -> str | None:
        """Return the key to send, read now from the environment if not given.

        Raises:
            MissingAPIKeyError: The provider needs a key and none is set.
        """
        if self.api_key:
            return self.api_key
        env = self.key_env_var
        if env is None:
            return None
        key = os.environ.get(env)
        if not key:
            withheld = bool(self.__dict__.get("_inline_key_withheld"))
            raise MissingAPIKeyError(env, alias, inline_withheld=withheld)
        where = f" (endpoint '{alias}')" if alias else ""
        check_key_text(key, f"environment variable {env}{where}")
        return key

    def __copy__(self) -> Self:
        # copy/deepcopy keep an inline key (pickling drops it, see __getstate__): a copy in
        # this process must call with the same key, never silently with the environment's.
        # Every field is an immutable scalar, so a shallow copy is also a deep one.
        new = object.__new__(type(self))
        for name, value in self.__dict__.items():
            object.__setattr__(new, name, value)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self.__copy__()

    def __getstate__(self) -> dict[str, Any]:
        # A key given inline stays in this process: pickles go to checkpoints and Ray objects.
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # Remember that a key was withheld, so a missing key says why (not the key itself).
        state["_inline_key_withheld"] = bool(self.api_key or
                                             self.__dict__.get("_inline_key_withheld"))
        state["api_key"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, without the API key."""
        batch = self.batch
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {
            "api_key": None,
            "batch": dataclasses.asdict(batch) if isinstance(batch, BatchPolicy) else batch}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, alias: str = "?") -> EndpointConfig:
        """Build from a mapping shaped like the constructor; unknown keys are rejected."""
        valid = [f.name for f in dataclasses.fields(EndpointConfig)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(
                f"Unknown key(s) {unknown} in endpoint '{alias}'. Valid keys: {valid}."
            )
        if "provider_api" not in data or "model" not in data:
            raise ConfigError(
                f"Endpoint '{alias}' needs 'provider_api' (openai, anthropic, vllm) and 'model'."
            )
        try:
            return EndpointConfig(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"Endpoint '{alias}': {exc}") from exc


@dataclass(frozen=True, eq=False)  # compares as an EndpointConfig
class OpenAIEndpointConfig(EndpointConfig):
    """An endpoint speaking the OpenAI Chat Completions format (key from OPENAI_API_KEY).

    Takes every ``EndpointConfig`` field; ``provider_api`` is "openai" (or "vllm", for an
    OpenAI-compatible self-hosted server).

    Example:
        >>> OpenAIEndpointConfig("gpt-4o-mini", max_concurrent=20)
    """

    provider_api: ProviderAPI = field(default="openai", kw_only=True)

    def __post_init__(self) -> None:
        if self.provider_api not in ("openai", "vllm"):
            raise ConfigError(
                f"OpenAIEndpointConfig speaks the OpenAI format; provider_api="
                f"{self.provider_api!r} does not fit. Use AnthropicEndpointConfig or "
                "EndpointConfig(provider_api=...)."
            )
        super().__post_init__()


@dataclass(frozen=True, eq=False)  # compares as an EndpointConfig
class AnthropicEndpointConfig(EndpointConfig):
    """An endpoint speaking the Anthropic Messages format (key from ANTHROPIC_API_KEY).

    Takes every ``EndpointConfig`` field; ``provider_api`` is "anthropic".

    Example:
        >>> AnthropicEndpointConfig("claude-sonnet-4-5", max_concurrent=8)
    """

    provider_api: ProviderAPI = field(default="anthropic", kw_only=True)

    def __post_init__(self) -> None:
        if self.provider_api != "anthropic":
            raise ConfigError(
                f"AnthropicEndpointConfig speaks the Anthropic format; provider_api="
                f"{self.provider_api!r} does not fit. Use OpenAIEndpointConfig or "
                "EndpointConfig(provider_api=...)."
            )
        super().__post_init__()


@dataclass(frozen=True)
class ResourceConfig:
    """Aliases mapped to endpoints.

    Example:
        >>> resources = ResourceConfig(endpoints={
        ...     "fast": OpenAIEndpointConfig(model="gpt-4o-mini", max_concurrent=20),
        ... })
    """

    endpoints: Mapping[str, Any] = field(default_factory=dict[str, Any])

    def __post_init__(self) -> None:
        checked: dict[str, Any] = {}
        for alias, cfg in self.endpoints.items():
            if not isinstance(alias, str) or not alias:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ConfigError(f"Endpoint aliases must be non-empty strings, got {alias!r}.")
            if isinstance(cfg, Mapping):
                cfg = EndpointConfig.from_dict(cfg, alias=alias)  # pyright: ignore[reportUnknownArgumentType]
            if not hasattr(cfg, "provider_api"):
                raise ConfigError(
                    f"Endpoint '{alias}' must be an EndpointConfig (or a dict shaped like one), "
                    f"got {type(cfg).__name__}."
                )
            checked[alias] = cfg
        object.__setattr__(self, "endpoints", checked)

    # --- a read-only mapping alias -> endpoint (not a Mapping subclass: settings tell a
    # ResourceConfig from a plain dict of endpoints by type) ---------------------------------
    def __getitem__(self, alias: str) -> Any:
        try:
            return self.endpoints[alias]
        except KeyError:
            raise UnknownAliasError(
                f"Alias '{alias}' is not in the ResourceConfig (known: {sorted(self.endpoints)}). "
                f"Add endpoints={{'{alias}': OpenAIEndpointConfig(model=...)}}."
            ) from None

    def __contains__(self, alias: object) -> bool:
        return alias in self.endpoints

    def __iter__(self) -> Iterator[str]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def keys(self) -> KeysView[str]:
        """The aliases."""
        return self.endpoints.keys()

    def values(self) -> ValuesView[Any]:
        """The endpoint configs."""
        return self.endpoints.values()

    def items(self) -> ItemsView[str, Any]:
        """(alias, endpoint config) pairs."""
        return self.endpoints.items()

    def get(self, alias: str, default: Any = None) -> Any:
        """The endpoint of ``alias``, or ``default``."""
        return self.endpoints.get(alias, default)

    def aliases(self) -> list[str]:
        """The configured aliases."""
        return list(self.endpoints)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from ``{"endpoints": {alias: {...}}}``; unknown keys are rejected."""
        if not isinstance(data, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(
                f"A resource config must be a mapping with key 'endpoints', got "
                f"{type(data).__name__}."
            )
        unknown = sorted(set(data) - {"endpoints"})
        if unknown:
            raise ConfigError(f"Unknown key(s) {unknown} in resource config. Valid keys: "
                              "['endpoints'].")
        endpoints: Any = data.get("endpoints") or {}
        if not isinstance(endpoints, Mapping):
            raise ConfigError("'endpoints' must map alias -> endpoint settings.")
        return cls(endpoints=dict(endpoints))  # pyright: ignore[reportUnknownArgumentType]

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        """Load from YAML shaped like the Python object.

        Example YAML::

            endpoints:
              fast: {provider_api: openai, model: gpt-4o-mini, max_concurrent: 32}
        """
        import yaml

        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"Cannot read resource config {p}: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Malformed YAML in {p}: {exc}") from exc
        try:
            return cls.from_dict(data or {})
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from exc
