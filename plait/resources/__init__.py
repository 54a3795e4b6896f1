"""Endpoint configuration and the machinery that calls endpoints within their limits."""

from plait.resources.config import (
    AnthropicEndpointConfig,
    EndpointConfig,
    OpenAIEndpointConfig,
    ResourceConfig,
)

__all__ = ["AnthropicEndpointConfig", "EndpointConfig", "OpenAIEndpointConfig", "ResourceConfig"]
