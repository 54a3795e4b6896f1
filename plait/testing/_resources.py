"""Pointing a ``ResourceConfig`` at a loopback server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from plait.resources.config import EndpointConfig, ProviderAPI, ResourceConfig

__all__ = ["DEFAULT_KEY", "DEFAULT_KEY_ENV", "resource_config_for"]

DEFAULT_KEY = "plait-testing-key"
DEFAULT_KEY_ENV = "PLAIT_TESTING_API_KEY"


def resource_config_for(
    base_url: str,
    aliases: Mapping[str, str] | None,
    provider_api: ProviderAPI,
    api_key: str | None,
    api_key_env: str,
    endpoint_options: Mapping[str, Any],
) -> ResourceConfig:
    """Build the ``ResourceConfig``; see ``LLMServer.resource_config``."""
    key = api_key or DEFAULT_KEY
    # EndpointConfig drops an inline key when pickled (checkpoints, Ray); the env var lets a
    # worker process started after this call (Ray workers inherit it) find the key too.
    os.environ.setdefault(api_key_env, key)
    url = base_url if provider_api == "anthropic" else f"{base_url}/v1"
    endpoints = {
        alias: EndpointConfig(
            provider_api=provider_api, model=model, base_url=url, api_key=key,
            api_key_env=api_key_env, **dict(endpoint_options),
        )
        for alias, model in (aliases or {"default": "plait-test-model"}).items()
    }
    return ResourceConfig(endpoints=endpoints)


class ServerURLs:
    """URLs and a ``ResourceConfig`` for any handle on a running loopback server."""

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, without a trailing slash."""
        raise NotImplementedError

    @property
    def _api_key(self) -> str | None:
        return None

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for ``openai.AsyncOpenAI`` (``base_url + "/v1"``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``base_url`` for ``anthropic.AsyncAnthropic`` (it appends ``/v1/messages``)."""
        return self.base_url

    def resource_config(
        self,
        aliases: Mapping[str, str] | None = None,
        *,
        provider_api: ProviderAPI = "openai",
        api_key: str | None = None,
        api_key_env: str = DEFAULT_KEY_ENV,
        **endpoint_options: Any,
    ) -> ResourceConfig:
        """A ``ResourceConfig`` whose endpoints all point at this server.

        The key is passed inline and, because ``EndpointConfig`` drops an inline key when
        pickled (checkpoints, Ray), also put in the environment variable ``api_key_env``
        (unless already set) and named there, so other processes started afterwards find it.

        Args:
            aliases: Alias -> model name; default ``{"default": "plait-test-model"}``.
            provider_api: "openai", "anthropic" or "vllm" (OpenAI format).
            api_key: The key to send; default the server's ``require_api_key`` or
                ``"plait-testing-key"``.
            api_key_env: Environment variable that carries the key to other processes.
            **endpoint_options: More ``EndpointConfig`` fields (``max_concurrent``,
                ``rate_limit``, ``max_retries``, ``timeout``, ...).

        Example:
            >>> resources = server.resource_config({"fast": "model-a"}, max_concurrent=8)
        """
        return resource_config_for(
            self.base_url, aliases, provider_api, api_key or self._api_key, api_key_env,
            endpoint_options,
        )
