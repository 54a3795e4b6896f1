"""Rate-limited baseline: hand-written asyncio with a naive retry on 429, as user code does.

Per row: two ``fast`` extractions gathered, then one ``smart`` comparison. A semaphore per
alias caps requests in flight; a 429 is retried after the server's ``retry-after`` (seconds)
with a fixed small budget of ``attempts`` tries. A call that is still refused fails its row.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import aiohttp


class RateLimited(Exception):
    """The server still answered 429 after the retry budget."""


async def run(base_url: str, api_key: str, rows: Sequence[tuple[str, str]], fast_model: str,
              smart_model: str, fast_limit: int, smart_limit: int,
              attempts: int = 3) -> tuple[int, int]:
    """Run every row; return (rows that failed, 429s received)."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    url = f"{base_url}/chat/completions"
    fast = asyncio.Semaphore(fast_limit)
    smart = asyncio.Semaphore(smart_limit)
    refused = [0]

    async def call(session: aiohttp.ClientSession, sem: asyncio.Semaphore, model: str,
                   system: str, prompt: str) -> str:
        body = json.dumps({
            "model": model, "max_tokens": 32,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": prompt}],
        }).encode()
        for _ in range(attempts):
            async with sem, session.post(url, data=body) as resp:
                if resp.status == 429:
                    refused[0] += 1
                    wait = float(resp.headers.get("retry-after", "1"))
                else:
                    resp.raise_for_status()
                    return json.loads(await resp.read())["choices"][0]["message"]["content"]
            await asyncio.sleep(wait)
        raise RateLimited(f"{model}: still 429 after {attempts} attempts")

    async def row(session: aiohttp.ClientSession, doc_a: str, doc_b: str) -> str:
        facts = await asyncio.gather(
            call(session, fast, fast_model, "Extract the key facts.", doc_a),
            call(session, fast, fast_model, "Extract the key facts.", doc_b),
        )
        return await call(session, smart, smart_model, "Compare the two fact lists.",
                          f"A:\n{facts[0]}\n\nB:\n{facts[1]}")

    connector = aiohttp.TCPConnector(limit=fast_limit + smart_limit)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        outcomes = await asyncio.gather(*(row(session, a, b) for a, b in rows),
                                        return_exceptions=True)
    return sum(1 for o in outcomes if isinstance(o, BaseException)), refused[0]
