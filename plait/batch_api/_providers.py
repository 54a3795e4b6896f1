"""OpenAI's Batch API and Anthropic's Message Batches, behind one small interface.

OpenAI: the calls go up as a JSONL file (``POST /files``, purpose "batch"), a batch is
created from it (``POST /batches``), polled (``GET /batches/{id}``), and its output and error
files are read (``GET /files/{id}/content``). Anthropic: the calls go up in one body
(``POST /v1/messages/batches``), the batch is polled, and its results (JSONL) are read from
``results_url``. Either way each call carries a ``custom_id`` and each result names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp

from plait.batch_api._http import BatchHTTP
from plait.clients._errors import error_from_status, excerpt, json_list, json_object
from plait.clients._redact import Redactor
from plait.clients.anthropic_wire import ANTHROPIC_VERSION, anthropic_payload, parse_anthropic_reply
from plait.clients.base import LLMRequest, LLMResponse
from plait.clients.openai_wire import openai_payload, parse_openai_reply
from plait.errors import LLMError, ServerError, TransientError
from plait.resources.config import EndpointConfig

__all__ = ["AnthropicBatches", "BatchAPI", "BatchState", "ItemOutcome", "OpenAIBatches",
           "batch_api_for"]

ItemOutcome = LLMResponse | LLMError
"""One call's result in a finished batch: its reply, or why it failed."""


@dataclass(frozen=True)
class BatchState:
    """A batch's status as the provider reports it.

    Attributes:
        phase: "running" (keep polling), "ended" (results can be read: completed, expired or
            cancelled) or "failed" (the batch was refused as a whole).
        status: The provider's own status word.
        refs: Where the results are (OpenAI file ids, Anthropic's results URL).
        detail: The provider's explanation of a failed batch.
    """

    phase: Literal["running", "ended", "failed"]
    status: str
    refs: Mapping[str, str] = field(default_factory=dict[str, str])
    detail: str = ""


class BatchAPI(Protocol):
    """One provider's batch API, for one endpoint."""

    provider: str
    http: BatchHTTP

    def payload(self, request: LLMRequest) -> dict[str, Any]:
        """The request body of one call (as the synchronous API would take it)."""
        ...

    def line(self, custom_id: str, payload: Mapping[str, Any]) -> bytes:
        """One call as it is uploaded (its length counts against the byte limit)."""
        ...

    async def submit(self, lines: Sequence[bytes], intent: str) -> str:
        """Upload the calls and create the batch (tagged ``intent`` where possible); its id."""
        ...

    async def find(self, intent: str) -> str | None:
        """The id of the batch created with tag ``intent``, or None if there is none."""
        ...

    async def state(self, batch_id: str) -> BatchState:
        """The batch's status now."""
        ...

    async def results(self, state: BatchState) -> dict[str, ItemOutcome]:
        """custom_id -> outcome of every call the ended batch reports."""
        ...

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to stop the batch (best effort)."""
        ...


def _jsonl(raw: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for text in raw.splitlines():
        if text.strip():
            try:
                row = json_object(json.loads(text))
            except ValueError:
                row = None
            if row is not None:
                rows.append(row)
    return rows


def _item_error(status: int, body: object, alias: str) -> LLMError:
    return error_from_status(status, None, json.dumps(body), alias)


class OpenAIBatches:
    """OpenAI's Batch API (also vLLM servers that offer it) for one endpoint."""

    provider = "openai"

    def __init__(self, config: EndpointConfig, alias: str, window: str, http_timeout: float,
                 max_bytes: int) -> None:
        self._model = config.model
        self._alias = alias
        self._base = config.resolved_base_url
        self._window = window
        key = config.resolve_api_key(alias)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.redactor = Redactor(key)
        self.http = BatchHTTP(headers, alias, self.redactor, timeout=http_timeout,
                              max_bytes=max_bytes)

    def payload(self, request: LLMRequest) -> dict[str, Any]:
        """The Chat Completions body of ``request``."""
        return openai_payload(self._model, request)

    def line(self, custom_id: str, payload: Mapping[str, Any]) -> bytes:
        """One JSONL line of the input file."""
        return json.dumps({"custom_id": custom_id, "method": "POST",
                           "url": "/v1/chat/completions", "body": payload}).encode()

    async def submit(self, lines: Sequence[bytes], intent: str) -> str:
        """Upload the JSONL file, then create the batch from it, tagged ``intent``."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", b"\n".join(lines) + b"\n", filename="plait-batch.jsonl",
                       content_type="application/jsonl")
        uploaded = await self.http.send_json("POST", f"{self._base}/files", data=form)
        file_id = self._field(uploaded, "id")
        created = await self.http.send_json("POST", f"{self._base}/batches", body={
            "input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": self._window,
            "metadata": {"created_by": "plait", "plait_intent": intent}})
        return self._field(created, "id")

    async def find(self, intent: str) -> str | None:
        """Search the newest batches (``GET /batches``, 10 pages of 100) for the tag."""
        after: str | None = None
        for _ in range(10):
            query = "?limit=100" + (f"&after={after}" if after else "")
            page = await self.http.send_json("GET", f"{self._base}/batches{query}")
            entries: list[Any] = json_list(page.get("data")) or []
            for entry in entries:
                batch = json_object(entry) or {}
                metadata = json_object(batch.get("metadata")) or {}
                if metadata.get("plait_intent") == intent and isinstance(batch.get("id"), str):
                    return str(batch["id"])
            last = json_object(entries[-1]) if entries else None
            if not page.get("has_more") or last is None or not isinstance(last.get("id"), str):
                return None
            after = str(last["id"])
        return None

    async def state(self, batch_id: str) -> BatchState:
        """``GET /batches/{id}``."""
        data = await self.http.send_json("GET", f"{self._base}/batches/{batch_id}")
        status = str(data.get("status") or "")
        refs = {k: str(data[k]) for k in ("output_file_id", "error_file_id") if data.get(k)}
        if status in ("completed", "expired", "cancelled"):
            return BatchState("ended", status, refs)
        if status == "failed":
            errors = json_object(data.get("errors")) or {}
            entries: list[Any] = json_list(errors.get("data")) or []
            detail = "; ".join(str((json_object(entry) or {}).get("message", entry))
                               for entry in entries)
            return BatchState("failed", status, refs, detail or "no reason given")
        return BatchState("running", status, refs)

    async def results(self, state: BatchState) -> dict[str, ItemOutcome]:
        """Read the output file and the error file."""
        outcomes: dict[str, ItemOutcome] = {}
        for ref in ("output_file_id", "error_file_id"):
            file_id = state.refs.get(ref)
            if not file_id:
                continue
            raw = await self.http.send("GET", f"{self._base}/files/{file_id}/content")
            for row in _jsonl(raw):
                custom_id = row.get("custom_id")
                if isinstance(custom_id, str):
                    outcomes[custom_id] = self._outcome(row)
        return outcomes

    def _outcome(self, row: dict[str, Any]) -> ItemOutcome:
        error = json_object(row.get("error"))
        if error is not None:
            return TransientError(
                f"Endpoint '{self._alias}': the batch did not run this call "
                f"({error.get('code')}: {error.get('message')}).", alias=self._alias)
        response = json_object(row.get("response")) or {}
        status = response.get("status_code")
        body = response.get("body")
        if status == 200:
            try:
                return parse_openai_reply(body, self._alias)
            except LLMError as exc:
                return self.redactor.error(exc)
        code = status if isinstance(status, int) else 500
        return self.redactor.error(_item_error(code, body, self._alias))

    async def cancel(self, batch_id: str) -> None:
        """``POST /batches/{id}/cancel``."""
        await self.http.send("POST", f"{self._base}/batches/{batch_id}/cancel")

    def _field(self, data: Mapping[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ServerError(f"Endpoint '{self._alias}': the batch API replied without "
                              f"'{name}': {excerpt(json.dumps(data))}", alias=self._alias)
        return value


_ANTHROPIC_ERRORS = {"invalid_request_error": 400, "authentication_error": 401,
                     "permission_error": 403, "not_found_error": 404,
                     "request_too_large": 413, "rate_limit_error": 429,
                     "api_error": 500, "overloaded_error": 529}


class AnthropicBatches:
    """Anthropic's Message Batches API for one endpoint."""

    provider = "anthropic"

    def __init__(self, config: EndpointConfig, alias: str, http_timeout: float,
                 max_bytes: int) -> None:
        self._model = config.model
        self._alias = alias
        self._base = config.resolved_base_url
        key = config.resolve_api_key(alias)
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        self.redactor = Redactor(key)
        self.http = BatchHTTP(headers, alias, self.redactor, timeout=http_timeout,
                              max_bytes=max_bytes)

    def payload(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages body of ``request``."""
        return anthropic_payload(self._model, request)

    def line(self, custom_id: str, payload: Mapping[str, Any]) -> bytes:
        """One entry of the ``requests`` array."""
        return json.dumps({"custom_id": custom_id, "params": payload}).encode()

    async def submit(self, lines: Sequence[bytes], intent: str) -> str:
        """``POST /v1/messages/batches`` with every call in the body (no tag: see ``find``)."""
        body = b'{"requests": [' + b", ".join(lines) + b"]}"
        created = await self.http.send_json("POST", f"{self._base}/v1/messages/batches",
                                            data=body)
        batch_id = created.get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise ServerError(f"Endpoint '{self._alias}': the batch API replied without an "
                              f"id: {excerpt(json.dumps(created))}", alias=self._alias)
        return batch_id

    async def find(self, intent: str) -> str | None:
        """None: Message Batches carry no metadata, so an untagged batch cannot be found.

        A driver killed between Anthropic creating a batch and the journal line (a few
        milliseconds) resubmits that batch's calls.
        """
        return None

    async def state(self, batch_id: str) -> BatchState:
        """``GET /v1/messages/batches/{id}``."""
        data = await self.http.send_json("GET", f"{self._base}/v1/messages/batches/{batch_id}")
        status = str(data.get("processing_status") or "")
        if status == "ended":
            url = data.get("results_url")
            return BatchState("ended", status, {"results_url": self._trusted(url, batch_id)})
        return BatchState("running", status)

    def _trusted(self, url: object, batch_id: str) -> str:
        # The key goes with the request: follow a results URL only on the endpoint's own host.
        fallback = f"{self._base}/v1/messages/batches/{batch_id}/results"
        if not isinstance(url, str):
            return fallback
        mine, theirs = urlsplit(self._base), urlsplit(url)
        same = (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)
        return url if same else fallback

    async def results(self, state: BatchState) -> dict[str, ItemOutcome]:
        """Read the results JSONL."""
        raw = await self.http.send("GET", state.refs["results_url"])
        outcomes: dict[str, ItemOutcome] = {}
        for row in _jsonl(raw):
            custom_id = row.get("custom_id")
            if isinstance(custom_id, str):
                outcomes[custom_id] = self._outcome(json_object(row.get("result")) or {})
        return outcomes

    def _outcome(self, result: dict[str, Any]) -> ItemOutcome:
        kind = result.get("type")
        if kind == "succeeded":
            try:
                return parse_anthropic_reply(result.get("message"), self._alias)
            except LLMError as exc:
                return self.redactor.error(exc)
        if kind == "errored":
            outer = json_object(result.get("error")) or {}
            inner = json_object(outer.get("error")) or outer
            status = _ANTHROPIC_ERRORS.get(str(inner.get("type")), 500)
            return self.redactor.error(_item_error(status, outer, self._alias))
        return TransientError(f"Endpoint '{self._alias}': the batch did not run this call "
                              f"(result {kind}).", alias=self._alias)

    async def cancel(self, batch_id: str) -> None:
        """``POST /v1/messages/batches/{id}/cancel``."""
        await self.http.send("POST", f"{self._base}/v1/messages/batches/{batch_id}/cancel")


def batch_api_for(config: EndpointConfig, alias: str, *, window: str,
                  max_bytes: int) -> BatchAPI:
    """The batch API of ``config``'s provider.

    Raises:
        MissingAPIKeyError: The provider needs a key and none is set.
    """
    # Replies (a day's results file) can be far larger than the upload; allow 4x.
    limit = 4 * max_bytes
    timeout = max(config.timeout, 300.0)  # uploads of hundreds of MB take minutes
    if config.provider_api == "anthropic":
        return AnthropicBatches(config, alias, timeout, limit)
    return OpenAIBatches(config, alias, window, timeout, limit)


