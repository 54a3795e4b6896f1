"""``LocalModelClient``: the ``LLMClient`` the local executor uses for a local model."""

from __future__ import annotations

import asyncio

from plait.clients.base import LLMRequest, LLMResponse
from plait.errors import APITimeoutError
from plait.local_models.config import LocalModelConfig
from plait.local_models.runner import LocalModelRunner

__all__ = ["LocalModelClient"]


class LocalModelClient:
    """Runs a local model in this process: loaded once, requests micro-batched.

    Built by ``make_client`` (via ``config.create_client``) for every local-model alias,
    so ``LLMInference(alias=...)`` needs no change. Like every client it never retries;
    the endpoint pool decides that from the error's ``retryable``.

    Args:
        config: A ``TorchEndpointConfig`` or ``VLLMEndpointConfig``.
        alias: The endpoint alias.
    """

    def __init__(self, config: LocalModelConfig, alias: str) -> None:
        self.runner = LocalModelRunner(config, alias)

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Generate a reply; ``timeout`` starts once the model is loaded.

        Raises:
            APITimeoutError: No reply within ``timeout`` seconds (retryable).
            ServerError: Generation failed (retryable).
            ConfigError: The model cannot be loaded (not retried).
        """
        # Loading can take minutes for a large model; it is not the request's latency.
        await self.runner.load()
        try:
            async with asyncio.timeout(timeout):
                return await self.runner.generate(request)
        except TimeoutError as exc:
            raise APITimeoutError(
                f"Local model '{self.runner.config.model_name}' gave no reply within "
                f"{timeout}s (queued behind other batches). Raise the endpoint's timeout or "
                "lower max_concurrent.",
                alias=self.runner.alias,
            ) from exc

    async def aclose(self) -> None:
        """Finish accepted requests and free the model."""
        await self.runner.aclose()
