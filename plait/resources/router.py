"""The interpreter's way to LLM calls: alias -> the pool of a ResourceManager."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from plait.clients._redact import Redactor
from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.errors import LLMError, PlaitError
from plait.resources.manager import ResourceManager
from plait.values import Value, llm_value

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

        pool = self._manager.pool(alias)
        started = time.perf_counter()
        try:
            response, value = await pool.call(
                request, node_id=node_id, row=row, validate=validate
            )
        except Exception as exc:
            masked = _masked(exc, pool.config, alias)
            if masked is exc:
                raise
            raise masked from None
        if isinstance(value, Value):  # LLMInference(as_value=True): attach the call's metadata
            value = llm_value(value, alias=alias, node_id=node_id, response=response,
                              config=pool.config, latency=time.perf_counter() - started)
        return value, response.usage


def _masked(exc: Exception, config: object, alias: str) -> Exception:
    """``exc``, or a copy with the endpoint's key masked if its text holds it.

    Clients mask what they raise; this is the last line before an error becomes a row's
    recorded error (message, checkpoint, Parquet ``error`` column), for errors raised
    elsewhere (a validator, a custom client) that quote the key.
    """
    resolve = getattr(config, "resolve_api_key", None)
    if resolve is None:
        return exc
    try:
        key: str | None = resolve(alias)
    except PlaitError:  # no key configured: nothing to mask
        return exc
    redactor = Redactor(key)
    if isinstance(exc, LLMError):
        return redactor.error(exc)
    text = str(exc)
    masked = redactor.text(text)
    if masked == text:
        return exc
    return LLMError(f"{type(exc).__name__}: {masked}", alias=alias)
