"""The interpreter's way to LLM calls: alias -> the pool of a ResourceManager."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.resources.manager import ResourceManager

__all__ = ["PoolRouter"]


class PoolRouter:
    """Routes each alias to its ``EndpointPool`` (limits, retries, client) in this process."""

    def __init__(self, manager: ResourceManager) -> None:
        self._manager = manager

    async def complete(
        self,
        alias: str,
        request: LLMRequest,
        *,
        parse: Callable[[str], Any],
        node_id: str,
        row: int | None,
    ) -> tuple[Any, Usage]:
        """Send ``request`` through the alias's pool; parse failures are retried there."""

        def validate(response: LLMResponse) -> Any:
            return parse(response.text)

        response, value = await self._manager.pool(alias).call(
            request, node_id=node_id, row=row, validate=validate
        )
        return value, response.usage
