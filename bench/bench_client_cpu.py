"""Per-call client CPU of both transports against the loopback server (run in another process).

Usage: .venv/bin/python bench/bench_client_cpu.py [calls]

Measures process CPU time (time.process_time: user + system of THIS process only; the
server runs in a child process) per call, for the bare client and for the whole pool path
(limiter + retries + stats), at concurrency 32.
"""

import asyncio
import sys
import time

from plait.clients.base import LLMRequest
from plait.clients.factory import make_client
from plait.resources.config import EndpointConfig
from plait.resources.limiter import LocalPermitSource
from plait.resources.pool import EndpointPool
from plait.testing import LLMServer


async def measure(config: EndpointConfig, calls: int, through_pool: bool) -> float:
    client = make_client(config, "bench")
    pool = EndpointPool("bench", config, client=client,
                        permits=LocalPermitSource(config.max_concurrent, None, None))
    request = LLMRequest("benchmark prompt " * 8, max_tokens=16)
    sem = asyncio.Semaphore(32)

    async def one() -> None:
        async with sem:
            if through_pool:
                await pool.call(request)
            else:
                await client.complete(request, timeout=30)

    await asyncio.gather(*(one() for _ in range(50)))  # warm up connections
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await client.aclose()
    print(f"  {config.provider_api:9} {config.transport:7} {'pool' if through_pool else 'client':6}"
          f" {cpu / calls * 1e6:8.0f} us CPU/call  {calls / wall:7.0f} calls/s")
    return cpu / calls


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with LLMServer.spawn() as server:
        for provider in ("openai", "anthropic"):
            url = server.openai_base_url if provider == "openai" else server.anthropic_base_url
            for transport in ("aiohttp", "sdk"):
                config = EndpointConfig(provider, "m", base_url=url, api_key="plait-testing-key",
                                        transport=transport, max_concurrent=32)
                for through_pool in (False, True):
                    asyncio.run(measure(config, calls, through_pool))


if __name__ == "__main__":
    main()
