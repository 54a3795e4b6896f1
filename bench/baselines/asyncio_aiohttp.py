"""Fan-out baseline: the same hand-written asyncio code posting JSON with aiohttp.

The leanest thing a user could write: one ``aiohttp.ClientSession`` (keep-alive pool sized
to the total concurrency), ``json.dumps``/``json.loads``, no retries, no validation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiohttp

from baselines.asyncio_sdk import Call, fanout_rows


def aiohttp_call(session: aiohttp.ClientSession, url: str) -> Call:
    """A ``Call`` posting Chat Completions JSON to ``url``."""

    async def call(model: str, system: str, prompt: str) -> str:
        body = json.dumps({
            "model": model, "max_tokens": 16, "temperature": 1.0,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": prompt}],
        }).encode()
        async with session.post(url, data=body) as resp:
            resp.raise_for_status()
            data = json.loads(await resp.read())
        return data["choices"][0]["message"]["content"]

    return call


async def run(base_url: str, api_key: str, prompts: Sequence[str], fast_model: str,
              smart_model: str, fast_limit: int, smart_limit: int,
              latency: dict[str, list[float]] | None = None) -> list[str]:
    """The baseline end to end: one session, closed at the end."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=fast_limit + smart_limit)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        return await fanout_rows(aiohttp_call(session, f"{base_url}/chat/completions"),
                                 prompts, fast_model, smart_model, fast_limit, smart_limit,
                                 latency)
