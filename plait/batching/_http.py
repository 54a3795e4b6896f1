"""``OpenAIResponsesExecutor``: a batch executor for the OpenAI Responses API over HTTP.

A micro-batch becomes concurrent ``POST /v1/responses`` requests on one keep-alive
connection pool (the shared ``JSONPoster`` transport: one aiohttp session per event loop,
bounded body reads, errors mapped to ``plait.errors`` and the key masked in every message).
Outputs come back in input order. A failed item does not fail its batch: its slot holds an
ERROR ``Value``, which the batcher raises for that item's caller only.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, cast

from plait.clients._errors import format_error
from plait.clients._redact import Redactor
from plait.clients.openai_wire import JSONPoster
from plait.errors import ConfigError, LLMError, MissingAPIKeyError
from plait.values import Value, ValueKind

__all__ = ["OpenAIResponsesExecutor"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 8.0

Item = str | Mapping[str, Any]


class OpenAIResponsesExecutor:
    """Runs a batch of prompts as concurrent OpenAI Responses API calls.

    Use it as the executor of a ``Batcher`` / ``AsyncBatcher`` / ``@autobatch``: each
    ``run(prompt)`` returns the reply text; an item whose request failed (after retries)
    raises its ``LLMError`` for that caller only.

    Args:
        api_key: The API key; default: the ``api_key_env`` environment variable.
        model: The model name sent with every request.
        base_url: The API root (``.../v1``); default ``$OPENAI_BASE_URL`` or OpenAI's.
        api_key_env: The variable the key is read from when ``api_key`` is not given.
        instructions: A system prompt sent with every item.
        temperature: Sampling temperature, or None for the provider's default.
        max_output_tokens: Output cap, or None.
        timeout: Seconds per request attempt.
        max_connections: Size of the connection pool (requests in flight at once).
        max_retries: Retries of a retryable failure (429, 5xx, connection, malformed reply),
            waiting ``Retry-After`` when the server gives it, else capped exponential backoff.

    Items are prompts (``str``) or request bodies (a mapping with ``input`` and any other
    Responses API field, merged over the defaults above).

    Example:
        >>> executor = OpenAIResponsesExecutor(api_key="...", model="gpt-4o-mini")
        >>> batcher = Batcher(max_batch=32, max_wait_ms=10)
        >>> batcher.run("Explain Rust ownership", executor=executor)
    """

    def __init__(
        self,
        api_key: str | None = None,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        instructions: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        timeout: float = 60.0,
        max_connections: int = 64,
        max_retries: int = 2,
    ) -> None:
        key = api_key or os.environ.get(api_key_env)
        if not key:
            raise MissingAPIKeyError(api_key_env)
        if timeout <= 0 or max_connections < 1 or max_retries < 0:
            raise ConfigError(
                f"OpenAIResponsesExecutor needs timeout > 0, max_connections >= 1 and "
                f"max_retries >= 0; got {timeout}, {max_connections}, {max_retries}."
            )
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
                         ).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self._defaults: dict[str, Any] = {"model": model}
        for name, value in (("instructions", instructions), ("temperature", temperature),
                            ("max_output_tokens", max_output_tokens)):
            if value is not None:
                self._defaults[name] = value
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._poster = JSONPoster(f"{self.base_url}/responses", headers, max_connections,
                                  f"responses:{model}", redactor=Redactor(key))
        self._rng = random.Random()

    async def __call__(self, items: list[Item]) -> list[str | Value]:
        """Send every item concurrently; the replies' text in input order.

        A failed item's slot is an ERROR ``Value`` carrying its ``LLMError`` (batchers raise
        it for that item's caller), so one bad item never fails the others.
        """
        return list(await asyncio.gather(*(self._item(i, item) for i, item in enumerate(items))))

    async def _item(self, index: int, item: Item) -> str | Value:
        try:
            return await self.complete(item)
        except LLMError as exc:
            return Value(ValueKind.ERROR, exc, meta={"index": index, "model": self.model})

    async def complete(self, item: Item) -> str:
        """One Responses API call (with retries); the reply's text.

        Raises:
            LLMError: The mapped failure once it is not retryable or retries are spent.
        """
        payload = self.payload(item)
        attempt = 0
        while True:
            try:
                reply = await self._poster.post(payload, self.timeout)
                return output_text(reply)
            except LLMError as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else min(
                    _BACKOFF_CAP, _BACKOFF_BASE * 2 ** attempt) * (0.5 + self._rng.random() / 2)
                attempt += 1
                await asyncio.sleep(delay)

    def payload(self, item: Item) -> dict[str, Any]:
        """The request body for one item."""
        if isinstance(item, str):
            return {**self._defaults, "input": item}
        if isinstance(item, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            body = {**self._defaults, **item}
            if "input" not in body:
                raise ConfigError("A Responses API item given as a mapping needs an 'input'.")
            return body
        raise ConfigError(
            f"OpenAIResponsesExecutor items are prompts (str) or request bodies (mappings), "
            f"got {type(item).__name__}."
        )

    async def aclose(self) -> None:
        """Close the connection pool of the running event loop."""
        await self._poster.aclose()

    def __repr__(self) -> str:
        return f"OpenAIResponsesExecutor(model={self.model!r}, base_url={self.base_url!r})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "OpenAIResponsesExecutor holds an API key and is never pickled (keys must not reach "
            "Ray objects or files); create it in the process that uses it."
        )


def output_text(reply: Any) -> str:
    """The text of a Responses API reply: its ``output_text`` parts, joined.

    Raises:
        ResponseFormatError: The reply has no text (retryable, like other malformed replies).
    """
    body = cast(dict[str, Any], reply) if isinstance(reply, dict) else {}
    texts: list[str] = []
    for item in _dicts(body.get("output")):
        if item.get("type", "message") != "message":
            continue
        texts.extend(part["text"] for part in _dicts(item.get("content"))
                     if part.get("type") == "output_text" and isinstance(part.get("text"), str))
    if not texts:
        status = body.get("status")
        raise format_error(f"no output_text in the reply (status {status!r})",
                           repr(cast(object, reply))[:500], None)
    return "".join(texts)


def _dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [cast(dict[str, Any], v) for v in cast(Sequence[Any], value) if isinstance(v, dict)]
