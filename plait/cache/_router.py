"""The router in front of the pools: cache lookups, and per-row cost and hit accounting.

It wraps whatever router an executor uses (``PoolRouter``, or the Ray runtime's capped
router), so a cache hit returns before any permit, slot or request: a hit costs nothing.
Every call's cost is priced here (``plait.pricing.endpoint_price``) and added to its row, so
executors can report cost per row and hold a run to its budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plait.cache._key import cache_key
from plait.cache._store import CachedReply, CorruptEntry, ResponseCache
from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.events import Event, EventSink
from plait.pricing._cost import endpoint_price
from plait.pricing._table import Price

if TYPE_CHECKING:
    from plait.execution.interpreter import Router
    from plait.resources.config import ResourceConfig

__all__ = ["CacheCounters", "MeteredRouter", "RowMeter"]

_log = logging.getLogger("plait")


class CacheCounters:
    """What the cache did in one run (``RunReport.cache``)."""

    __slots__ = ("corrupt", "hits", "misses", "saved_usd", "write_errors", "writes")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.corrupt = 0
        self.write_errors = 0
        self.saved_usd = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run report."""
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes,
                "corrupt": self.corrupt, "write_errors": self.write_errors,
                "saved_usd": self.saved_usd}


class RowMeter:
    """Cost and cache hits of one row so far."""

    __slots__ = ("cache_hits", "cost_usd")

    def __init__(self) -> None:
        self.cost_usd = 0.0
        self.cache_hits = 0


class MeteredRouter:
    """Consults ``cache`` before ``inner``; prices every call and counts it on its row.

    Args:
        inner: The router that really sends requests.
        resources: The endpoints (for prices and the cache key's provider and model).
        cache: The response cache, or None for no caching (calls are still priced).
        events: Event sink for "cache_hit" instants and corrupt-entry warnings, or None.
        max_concurrent: Cap on calls in flight through ``inner`` across all aliases (the
            run's ``max_concurrent``), held here so that cache hits never wait for it.
    """

    def __init__(self, inner: Router, resources: ResourceConfig, *,
                 cache: ResponseCache | None = None, events: EventSink | None = None,
                 max_concurrent: int | None = None) -> None:
        self._inner = inner
        self._global = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._resources = resources
        self.cache = cache
        self._events = events
        self._prices: dict[str, Price] = {}
        self.rows: dict[int | None, RowMeter] = {}
        self.counters = CacheCounters()
        self.hits_by_alias: dict[str, int] = {}
        self.spent_usd = 0.0

    def price(self, alias: str) -> Price:
        """The price of ``alias``'s endpoint (looked up once)."""
        price = self._prices.get(alias)
        if price is None:
            price = self._prices[alias] = endpoint_price(self._resources.get(alias))
        return price

    def pop_row(self, row: int | None) -> RowMeter:
        """Forget ``row`` and return what it cost (a row that made no call cost nothing)."""
        return self.rows.pop(row, None) or RowMeter()

    def _row(self, row: int | None) -> RowMeter:
        meter = self.rows.get(row)
        if meter is None:
            meter = self.rows[row] = RowMeter()
        return meter

    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        """The cached reply when there is one, else ``inner``'s (then stored)."""
        cache = self.cache
        if cache is None:
            value, usage = await self._send(alias, request, parse, node_id, row)
            self._spend(alias, usage, row)
            return value, usage
        config = self._resources.get(alias)
        key = cache_key(config, request, node_id=node_id, row=row)
        reply = self._lookup(cache, key, alias, node_id, row)
        if reply is not None:
            try:
                value = parse(reply.text)
            except Exception as exc:  # e.g. the response_format class gained a validator
                self._warn(f"Cached reply for node '{node_id}' (alias '{alias}') no longer "
                           f"parses ({type(exc).__name__}: {exc}); calling the endpoint "
                           "again.", alias, node_id, row)
            else:
                return self._hit(alias, config, reply, value, node_id, row), Usage(0, 0)
        self.counters.misses += 1
        texts: list[str] = []

        def keep(text: str) -> Any:
            parsed = parse(text)
            texts.append(text)  # only replies that parsed: the last one is the answer
            return parsed

        value, usage = await self._send(alias, request, keep, node_id, row)
        self._spend(alias, usage, row)
        if texts:
            entry = CachedReply(texts[-1], usage.input_tokens, usage.output_tokens,
                                str(getattr(config, "model", "")), time.time())
            try:
                await asyncio.to_thread(cache.put, key, entry)
                self.counters.writes += 1
            except OSError as exc:  # the reply is paid for and returned; only caching failed
                self.counters.write_errors += 1
                self._warn(f"Could not write the cache entry for node '{node_id}' to "
                           f"{cache.path}: {exc}", alias, node_id, row)
        return value, usage

    async def _send(self, alias: str, request: LLMRequest, parse: Callable[[str], Any],
                    node_id: str, row: int | None) -> tuple[Any, Usage]:
        # A batched endpoint's calls wait in a batch, not on a connection: the cap on
        # requests in flight would only shrink its batches (plait.batch_api).
        if self._global is None or getattr(self._resources.get(alias), "batch", False):
            return await self._inner.complete(alias, request, parse=parse, node_id=node_id,
                                              row=row)
        async with self._global:
            return await self._inner.complete(alias, request, parse=parse, node_id=node_id,
                                              row=row)

    def _spend(self, alias: str, usage: Usage, row: int | None) -> None:
        batched = bool(getattr(self._resources.get(alias), "batch", False))  # batch API price
        cost = self.price(alias).cost(usage.input_tokens, usage.output_tokens, batch=batched)
        self.spent_usd += cost
        self._row(row).cost_usd += cost

    def _lookup(self, cache: ResponseCache, key: str, alias: str, node_id: str,
                row: int | None) -> CachedReply | None:
        try:
            return cache.get(key)
        except CorruptEntry as exc:
            self.counters.corrupt += 1
            self._warn(f"Cache entry {cache.entry_path(key)} is corrupt ({exc}); treating it "
                       "as a miss (the fresh reply replaces it).", alias, node_id, row)
            return None

    def _hit(self, alias: str, config: Any, reply: CachedReply, value: Any, node_id: str,
             row: int | None) -> Any:
        counters = self.counters
        counters.hits += 1
        counters.saved_usd += self.price(alias).cost(reply.input_tokens, reply.output_tokens)
        self.hits_by_alias[alias] = self.hits_by_alias.get(alias, 0) + 1
        self._row(row).cache_hits += 1
        if self._events is not None:
            now = time.perf_counter()
            self._events(Event("cache_hit", now, now, alias, node_id, row, -1,
                               {"cached": True, "input_tokens": reply.input_tokens,
                                "output_tokens": reply.output_tokens}))
        from plait.values import Value, llm_value

        if isinstance(value, Value):  # as_value=True: the original call's metadata, no cost
            response = LLMResponse(reply.text, Usage(reply.input_tokens, reply.output_tokens),
                                   reply.model)
            value = llm_value(value, alias=alias, node_id=node_id, response=response,
                              config=config, latency=0.0)
            value = Value(value.kind, value.payload, value.ref,
                          {**value.meta, "cost_usd": 0.0, "cached": True})
        return value

    def _warn(self, message: str, alias: str, node_id: str, row: int | None) -> None:
        _log.warning(message)
        if self._events is not None:
            now = time.perf_counter()
            self._events(Event("warning", now, now, alias, node_id, row, -1,
                               {"message": message}))
