"""The cache key: a digest of everything that determines an LLM reply, and nothing else.

Keyed: the provider wire format, the model, every field of the provider-neutral request
(prompt, system prompt, temperature, max_tokens, response schema and its name, and any field
added to ``LLMRequest`` later, such as a seed), and, when temperature > 0, a sample index.
Self-hosted endpoints (``vllm``) also key on their base URL: their model names are local
names, so two servers may serve different weights under one name. Never keyed: the API key,
limits, timeouts, the alias (two aliases on one model share replies).

The sample index is ``(row, node id)``: deterministic, so a re-run of the same rows hits
the entries it wrote, yet two nodes (or rows) asking the same question at temperature > 0
stay distinct samples, as they would be without a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson

from plait.clients.base import LLMRequest

__all__ = ["KEY_VERSION", "cache_key", "key_material"]

KEY_VERSION = 1
"""Bumped when the key's contents change, so old entries are never misread as new ones."""

_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(LLMRequest))


def key_material(config: Any, request: LLMRequest, *, node_id: str | None,
                 row: int | None) -> dict[str, Any]:
    """The plain data the key is a digest of, by name (shown by tests; never a secret).

    Args:
        config: The endpoint (``provider_api``, ``model``, ``base_url`` are read).
        request: The request.
        node_id: The graph node making the call (used only when temperature > 0).
        row: The row index (used only when temperature > 0).
    """
    version, provider, model, base_url, fields, sample = _parts(config, request, node_id, row)
    return {"v": version, "provider": provider, "model": model, "base_url": base_url,
            "request": dict(zip(_REQUEST_FIELDS, fields, strict=True)), "sample": sample}


def _parts(config: Any, request: LLMRequest, node_id: str | None, row: int | None
           ) -> tuple[int, str, str, str | None, list[Any], list[Any] | None]:
    provider = str(getattr(config, "provider_api", type(config).__name__))
    # Model names of the hosted providers are global; a self-hosted name is the server's own.
    base_url = (getattr(config, "base_url", None)
                if provider == "vllm" or not hasattr(config, "provider_api") else None)
    return (KEY_VERSION, provider, str(getattr(config, "model", "")), base_url,
            [getattr(request, name) for name in _REQUEST_FIELDS],
            [row, node_id] if request.temperature > 0 else None)


def cache_key(config: Any, request: LLMRequest, *, node_id: str | None,
              row: int | None) -> str:
    """The hex SHA-256 of the key's parts as compact JSON (orjson: a few µs per call).

    Keys are not sorted: the only mapping is the response schema, whose order is fixed by
    its class; a different order could only cost a miss, never a wrong hit.
    """
    return hashlib.sha256(orjson.dumps(_parts(config, request, node_id, row),
                                       default=str)).hexdigest()
