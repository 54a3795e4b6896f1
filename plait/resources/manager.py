"""The per-process registry of endpoint pools: one pool (client + limits + stats) per alias."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from plait.batch_api._client import BatchClient
from plait.batch_api._policy import as_policy
from plait.clients.base import LLMClient
from plait.clients.factory import check_credentials, make_client
from plait.errors import ConfigError, PlaitError
from plait.events import EventSink
from plait.resources.clock import Clock, MonotonicClock
from plait.resources.config import EndpointConfig, ResourceConfig
from plait.resources.limiter import LocalPermitSource
from plait.resources.permits import PermitSource
from plait.resources.pool import EndpointPool

__all__ = ["ClientFactory", "PermitFactory", "ResourceManager", "resources_key"]

PermitFactory = Callable[[str, EndpointConfig], PermitSource]
ClientFactory = Callable[[EndpointConfig, str], LLMClient]


def resources_key(resources: ResourceConfig) -> Hashable:
    """What makes two ``ResourceConfig`` the same endpoints, compared by value.

    Two calls given equal configs (say, the same dict, rebuilt per call) share one manager:
    one connection pool and one limiter per endpoint, not one per call. The key includes
    the key that would be sent (inline or from the environment, now) so configs that
    differ only in their key never share clients. It lives in this process only.
    Endpoints that are not plain ``EndpointConfig`` (local models) compare by identity.
    """
    parts: list[Hashable] = []
    for alias in sorted(resources.aliases()):
        config: object = resources.endpoints[alias]
        if isinstance(config, EndpointConfig):
            values = tuple(getattr(config, f.name) for f in dataclasses.fields(config))
            try:
                key = config.resolve_api_key(alias)
            except PlaitError:  # reported when the manager starts, not here
                key = None
            parts.append((alias, values, key))
        else:
            parts.append((alias, "object", id(config)))
    return tuple(parts)


class ResourceManager:
    """Builds and owns one ``EndpointPool`` per alias of a ``ResourceConfig``.

    Pools are built lazily on first use; ``start`` builds the named ones up front after
    checking their credentials, so a missing key fails the run before any request.

    Args:
        resources: The aliases and their endpoints.
        clock: Time source shared by every limiter and pool.
        events: Event sink passed to every pool, or None.
        permit_factory: Builds each alias's ``PermitSource``; defaults to an in-process
            ``LocalPermitSource`` (plait_ray substitutes cluster-leased permits).
        client_factory: Builds each alias's client; defaults to ``make_client``.
        rng: Randomness for backoff jitter.

    Example:
        >>> manager = ResourceManager(resources)
        >>> await manager.start(["fast"])
        >>> response, _ = await manager.pool("fast").call(LLMRequest(prompt="hi"))
        >>> await manager.aclose()
    """

    def __init__(
        self,
        resources: ResourceConfig,
        *,
        clock: Clock | None = None,
        events: EventSink | None = None,
        permit_factory: PermitFactory | None = None,
        client_factory: ClientFactory | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._resources = resources
        self._clock: Clock = clock or MonotonicClock()
        self._events = events
        self._permit_factory = permit_factory or self._local_permits
        self._client_factory = client_factory or make_client
        self._rng = rng or random.Random()
        self._pools: dict[str, EndpointPool] = {}
        self._key: Hashable | None = None

    def serves(self, resources: ResourceConfig) -> bool:
        """True if ``resources`` is this manager's config or equal to it (by value)."""
        if resources is self._resources:
            return True
        if self._key is None:
            self._key = resources_key(self._resources)
        return resources_key(resources) == self._key

    def _local_permits(self, alias: str, config: EndpointConfig) -> PermitSource:
        return LocalPermitSource(
            config.max_concurrent, config.rate_limit, config.tokens_per_minute, self._clock,
        )

    def _config(self, alias: str) -> EndpointConfig:
        if alias not in self._resources:
            known = sorted(self._resources.aliases())
            raise ConfigError(
                f"Alias '{alias}' is not in the ResourceConfig (known: {known}). Add "
                f"endpoints={{'{alias}': OpenAIEndpointConfig(model=...)}} or use a known "
                "alias in the module."
            )
        config: EndpointConfig = self._resources[alias]
        return config

    async def start(self, aliases: Iterable[str] | None = None) -> None:
        """Check credentials of ``aliases`` (all if None), then build their pools.

        Every alias is checked before any pool is built, so nothing is sent when one key
        is missing.

        Raises:
            ConfigError: An alias is unknown.
            MissingAPIKeyError: An endpoint needs a key that is not set.
        """
        names = list(self._resources.aliases() if aliases is None else aliases)
        configs = {alias: self._config(alias) for alias in names}
        for alias, config in configs.items():
            check_credentials(config, alias)
        for alias in names:
            self.pool(alias)

    def pool(self, alias: str) -> EndpointPool:
        """The pool of ``alias``, built on first use.

        Raises:
            ConfigError: ``alias`` is not configured; the message lists the known ones.
        """
        pool = self._pools.get(alias)
        if pool is None:
            config = self._config(alias)
            policy = as_policy(getattr(config, "batch", False))
            if policy is not None:
                # A batch holds any number of calls: the synchronous API's concurrency and
                # rate limits do not apply (the provider's batch limits are the client's).
                client: LLMClient = BatchClient(config, alias, policy, clock=self._clock)
                permits = LocalPermitSource(None, None, None, self._clock)
            else:
                client = self._client_factory(config, alias)
                permits = self._permit_factory(alias, config)
            pool = EndpointPool(
                alias, config, client=client, permits=permits,
                clock=self._clock, events=self._events, rng=self._rng,
            )
            self._pools[alias] = pool
        return pool

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each built pool's ``EndpointStats.to_dict()``, by alias."""
        return {alias: pool.stats.to_dict() for alias, pool in self._pools.items()}

    async def aclose(self) -> None:
        """Close every client; the pools are dropped (a later ``pool()`` builds anew)."""
        pools, self._pools = self._pools, {}
        errors: list[Exception] = []
        for pool in pools.values():
            try:
                await pool.client.aclose()
            except Exception as exc:  # close the others before reporting
                errors.append(exc)
        if errors:
            raise errors[0]
