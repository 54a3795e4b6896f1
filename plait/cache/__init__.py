"""A response cache: rerun what changed, pay for nothing else.

``ExecutionSettings(cache=PATH)`` (or ``run(..., cache=...)``, ``run_dataset(...,
cache=...)``, ``plait run --cache PATH``) stores every LLM reply under a digest of
everything that determines it (see ``plait.cache._key``). A later call with the same
request is answered from the store: no request, no permit, no cost. Hits are counted in
``RunReport.cache`` and per endpoint (``cache_hits``), shown as "cache_hit" instants in the
trace, and written per row to the Parquet ``cache_hits`` column.

Layout, atomicity and the corrupt-entry rule: ``plait.cache._store``. Housekeeping:
``plait cache stats PATH`` and ``plait cache prune PATH --older-than 30d``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plait.cache._key import KEY_VERSION, cache_key, key_material
from plait.cache._router import CacheCounters, MeteredRouter, RowMeter
from plait.cache._store import CacheDirStats, CachedReply, CorruptEntry, ResponseCache
from plait.errors import ConfigError

__all__ = [
    "KEY_VERSION",
    "CacheCounters",
    "CacheDirStats",
    "CachedReply",
    "CorruptEntry",
    "MeteredRouter",
    "ResponseCache",
    "RowMeter",
    "as_cache",
    "cache_key",
    "key_material",
]


def as_cache(value: Any) -> ResponseCache | None:
    """A ``cache=`` setting as a ``ResponseCache``: a path, a cache, or None/False for none.

    Raises:
        ConfigError: Anything else (the message shows the accepted forms).
    """
    if value is None or value is False:
        return None
    if isinstance(value, ResponseCache):
        return value
    if isinstance(value, str | Path):
        return ResponseCache(value)
    raise ConfigError(f"cache must be a directory path or a plait.cache.ResponseCache, got "
                      f"{type(value).__name__}: e.g. cache='.plait-cache'.")
