"""Choose the client for an endpoint by wire format (``provider_api``) and ``transport``."""

from __future__ import annotations

from plait.clients.anthropic_wire import AnthropicWireClient
from plait.clients.base import LLMClient
from plait.clients.openai_wire import OpenAIWireClient
from plait.resources.config import EndpointConfig

__all__ = ["check_credentials", "make_client"]


def check_credentials(config: EndpointConfig, alias: str) -> None:
    """Fail fast, before any request, if the endpoint needs a key that is not set.

    Raises:
        MissingAPIKeyError: Names the environment variable and the fix.
    """
    config.resolve_api_key(alias)


def make_client(config: EndpointConfig, alias: str) -> LLMClient:
    """Build the client for ``config``: "vllm" speaks the OpenAI wire format.

    ``transport="aiohttp"`` gives the lean wire clients; ``"sdk"`` the official SDKs.

    Raises:
        MissingAPIKeyError: The provider needs a key and none is set.
    """
    create_client = getattr(config, "create_client", None)
    if create_client is not None:
        # Local-model endpoints (plait.local_models) run in-process and build their own client.
        client: LLMClient = create_client(alias)
        return client
    check_credentials(config, alias)
    anthropic_format = config.provider_api == "anthropic"
    if config.transport == "sdk":
        # Imported here: the SDKs are heavy to import and only needed on this path.
        from plait.clients.sdk import AnthropicSDKClient, OpenAISDKClient

        return AnthropicSDKClient(config, alias) if anthropic_format else OpenAISDKClient(
            config, alias)
    return AnthropicWireClient(config, alias) if anthropic_format else OpenAIWireClient(
        config, alias)
