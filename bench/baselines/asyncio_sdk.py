"""Fan-out baseline: hand-written asyncio + one semaphore per alias + ``openai.AsyncOpenAI``.

What a careful user writes without a framework: per row, 4 ``fast`` calls gathered, then one
``smart`` call built from their answers; every row started at once with ``asyncio.gather``;
a semaphore per alias caps requests in flight. SDK retries are left at the SDK default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import openai

Call = Callable[[str, str, str], Awaitable[str]]  # (model, system, prompt) -> text


async def fanout_rows(call: Call, prompts: Sequence[str], fast_model: str, smart_model: str,
                      fast_limit: int, smart_limit: int,
                      latency: dict[str, list[float]] | None = None) -> list[str]:
    """Run the fan-out workload on ``prompts`` with ``call`` doing one request.

    ``latency``, if given, collects ``model -> [total seconds, calls]`` of the requests.
    """
    fast = asyncio.Semaphore(fast_limit)
    smart = asyncio.Semaphore(smart_limit)
    sums = latency if latency is not None else {}

    async def limited(sem: asyncio.Semaphore, model: str, system: str, prompt: str) -> str:
        async with sem:
            start = time.perf_counter()
            text = await call(model, system, prompt)
            acc = sums.setdefault(model, [0.0, 0])
            acc[0] += time.perf_counter() - start
            acc[1] += 1
            return text

    async def row(text: str) -> str:
        answers = await asyncio.gather(*(
            limited(fast, fast_model, f"Angle {x}.", text) for x in "ABCD"))
        prompt = "\n".join(f"{n}: {a}" for n, a in enumerate(answers, start=1))
        return await limited(smart, smart_model, "Aggregate.", prompt)

    return list(await asyncio.gather(*(row(p) for p in prompts)))


def sdk_call(client: openai.AsyncOpenAI) -> Call:
    """A ``Call`` over the official SDK."""

    async def call(model: str, system: str, prompt: str) -> str:
        reply = await client.chat.completions.create(
            model=model, max_tokens=16, temperature=1.0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        )
        return reply.choices[0].message.content or ""

    return call


async def run(base_url: str, api_key: str, prompts: Sequence[str], fast_model: str,
              smart_model: str, fast_limit: int, smart_limit: int,
              latency: dict[str, list[float]] | None = None) -> list[str]:
    """The baseline end to end: one SDK client, closed at the end."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
    try:
        return await fanout_rows(sdk_call(client), prompts, fast_model, smart_model,
                                 fast_limit, smart_limit, latency)
    finally:
        await client.close()
