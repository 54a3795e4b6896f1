"""``RayReplicaClient``: the ``LLMClient`` Ray workers use for local-model aliases.

Hosted aliases keep plait's HTTP clients (the worker makes the call itself); local aliases
send their requests to the alias's replica actors, where the model runs on its GPU. The
worker's concurrent requests for an alias travel together: one actor call per micro-batch
(see ``ReplicaPool``). Wire it in by giving ``WorkerRuntime``/``ResourceManager`` the
factory::

    ResourceManager(resources, client_factory=replica_client_factory(namespace))
"""

from __future__ import annotations

from collections.abc import Callable

from plait.clients.base import LLMClient, LLMRequest, LLMResponse
from plait.clients.factory import make_client
from plait.local_models.config import LocalModelConfig
from plait.resources.config import EndpointConfig
from plait_ray.replicas import ReplicaPool

__all__ = ["RayReplicaClient", "replica_client_factory"]


class RayReplicaClient:
    """Sends requests to the replica actors of one local alias (batched, least-loaded first).

    It never retries: a dead replica fails each request of its micro-batch with the
    retryable ``ReplicaUnavailableError`` and the endpoint pool retries each, within the
    alias's ``max_retries``.

    Args:
        pool: The alias's replicas.
    """

    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Generate on a replica; ``timeout`` starts once its model is loaded."""
        return await self.pool.call(request, timeout=timeout)

    async def aclose(self) -> None:
        """Send requests already submitted; the replicas are shared and outlive this client."""
        await self.pool.aclose()


def replica_client_factory(
    namespace: str | None = None,
    fallback: Callable[[EndpointConfig, str], LLMClient] = make_client,
) -> Callable[[EndpointConfig, str], LLMClient]:
    """A ``client_factory`` for ``ResourceManager`` in Ray workers and drivers.

    Args:
        namespace: Ray namespace of the replica actors (the driver's
            ``ensure_replica_pools`` must use the same).
        fallback: The factory for hosted endpoints.
    """

    def factory(config: EndpointConfig, alias: str) -> LLMClient:
        local: object = config
        if isinstance(local, LocalModelConfig):
            return RayReplicaClient(ReplicaPool(alias, local, namespace))
        return fallback(config, alias)

    return factory
