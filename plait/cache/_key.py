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
import json
from typing import Any

from plait.clients.base import LLMRequest

__all__ = ["KEY_VERSION", "cache_key", "key_material"]

KEY_VERSION = 1
"""Bumped when the key's contents change, so old entries are never misread as new ones."""

_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(LLMRequest))


def key_material(config: Any, request: LLMRequest, *, node_id: str | None,
                 row: int | None) -> dict[str, Any]:
    """The plain data the key is a digest of (shown by tests; never holds a secret).

    Args:
        config: The endpoint (``provider_api``, ``model``, ``base_url`` are read).
        request: The request.
        node_id: The graph node making the call (used only when temperature > 0).
        row: The row index (used only when temperature > 0).
    """
    provider = str(getattr(config, "provider_api", type(config).__name__))
    material: dict[str, Any] = {
        "v": KEY_VERSION,
        "provider": provider,
        "model": str(getattr(config, "model", "")),
        "request": {name: getattr(request, name) for name in _REQUEST_FIELDS},
    }
    if provider == "vllm" or not hasattr(config, "provider_api"):
        material["base_url"] = getattr(config, "base_url", None)
    if request.temperature > 0:
        material["sample"] = [row, node_id]
    return material


def cache_key(config: Any, request: LLMRequest, *, node_id: str | None,
              row: int | None) -> str:
    """The hex SHA-256 of ``key_material`` in canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(key_material(config, request, node_id=node_id, row=row),
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
