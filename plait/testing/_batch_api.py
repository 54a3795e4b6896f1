"""The loopback server's emulation of OpenAI's Batch API and Anthropic's Message Batches.

OpenAI: ``POST /v1/files`` (multipart JSONL upload, purpose "batch"), ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/files/{id}/content``
(output and error files). Anthropic: ``POST /v1/messages/batches``, ``GET
/v1/messages/batches/{id}``, ``POST .../{id}/cancel``, ``GET .../{id}/results`` (JSONL).

A batch ends ``BatchScript.delay`` seconds after it was created; its replies are those of
the synchronous endpoints (the server's responder). ``BatchScript`` also scripts partial
failures (items whose user text matches), expiry, refusal of whole batches, batches that
never finish, and records every submitted ``custom_id`` and body, so tests can assert that
nothing was submitted twice.

Example:
    >>> server.batches.script(delay=0.2, fail_match="row 7")
    >>> server.batches.stats().duplicate_custom_ids
    0
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from plait.errors import ConfigError
from plait.testing._replies import json_response
from plait.testing._wire import AnthropicFormat, ChatRequest, OpenAIFormat, WireError, formats

__all__ = ["BatchEmulator", "BatchScript", "BatchStats"]

Reply = Callable[[ChatRequest], Awaitable[tuple[str, Any]]]
Handler = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]
_ids = itertools.count(1)


@dataclass(frozen=True)
class BatchScript:
    """How emulated batches behave.

    Args:
        delay: Seconds from creation until a batch has ended.
        fail_match: Items whose last user message contains this text fail (in the error
            file / as "errored" results) with ``fail_status``.
        fail_status: HTTP status of a failed item (500: retryable; 400: not).
        fail_limit: Most items failed this way (None: every match), so retries succeed.
        expire_match: Items whose user text contains this are not run: the batch ends
            "expired" (OpenAI) and they are reported expired.
        expire_limit: Most items expired this way (None: every match).
        refuse: Batches end "failed" as a whole (OpenAI) / every item errored (Anthropic).
        never_end: Batches stay in progress until cancelled (for max_wait tests).
    """

    delay: float = 0.1
    fail_match: str | None = None
    fail_status: int = 500
    fail_limit: int | None = None
    expire_match: str | None = None
    expire_limit: int | None = None
    refuse: bool = False
    never_end: bool = False


@dataclass(frozen=True)
class BatchStats:
    """What the emulated batch APIs saw.

    Attributes:
        requests: HTTP requests to the batch routes.
        requests_by_route: The same, per route ("POST /v1/batches", ...).
        batches_created: Batches created.
        items_submitted: Calls submitted across all batches.
        duplicate_custom_ids: Submissions of a ``custom_id`` already submitted before.
        duplicate_bodies: Submissions of a request body already submitted before.
        items_failed: Items answered with a scripted failure.
        items_expired: Items reported expired.
        cancelled: Batches cancelled.
    """

    requests: int = 0
    requests_by_route: dict[str, int] = field(default_factory=dict[str, int])
    batches_created: int = 0
    items_submitted: int = 0
    duplicate_custom_ids: int = 0
    duplicate_bodies: int = 0
    items_failed: int = 0
    items_expired: int = 0
    cancelled: int = 0


@dataclass
class _Batch:
    id: str
    provider: str
    items: list[tuple[str, dict[str, Any]]]
    created: float
    status: str = "in_progress"
    results: dict[str, Any] = field(default_factory=dict[str, Any])
    output_file: str | None = None
    error_file: str | None = None
    ended: bool = False
    metadata: dict[str, Any] = field(default_factory=dict[str, Any])


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/v1/files$"), "upload"),
    ("GET", re.compile(r"^/v1/files/([\w-]+)/content$"), "file_content"),
    ("POST", re.compile(r"^/v1/batches$"), "openai_create"),
    ("GET", re.compile(r"^/v1/batches$"), "openai_list"),
    ("GET", re.compile(r"^/v1/batches/([\w-]+)$"), "openai_get"),
    ("POST", re.compile(r"^/v1/batches/([\w-]+)/cancel$"), "cancel"),
    ("POST", re.compile(r"^/v1/messages/batches$"), "anthropic_create"),
    ("GET", re.compile(r"^/v1/messages/batches/([\w-]+)$"), "anthropic_get"),
    ("GET", re.compile(r"^/v1/messages/batches/([\w-]+)/results$"), "anthropic_results"),
    ("POST", re.compile(r"^/v1/messages/batches/([\w-]+)/cancel$"), "cancel"),
]


class BatchEmulator:
    """Both batch APIs, in memory, for one ``LLMServer``.

    Args:
        reply: The server's reply maker (text and tool input for a parsed request).
        authorized: Tells whether a request carries the server's key.
        clock: Wall-clock source for delays.
    """

    def __init__(self, reply: Reply, authorized: Callable[[web.BaseRequest], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reply = reply
        self._authorized = authorized
        self._clock = clock
        self._script = BatchScript()
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, _Batch] = {}
        self.reset_stats()

    def script(self, **changes: Any) -> None:
        """Change the ``BatchScript`` (unknown names raise ``ConfigError``)."""
        names = {f.name for f in dataclasses.fields(BatchScript)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"Unknown batch script setting(s) {unknown}. Valid: "
                              f"{sorted(names)}.")
        self._script = dataclasses.replace(self._script, **changes)

    def reset_stats(self) -> None:
        """Zero the counters (submitted ids are forgotten too)."""
        self._routes: Counter[str] = Counter()
        self._seen_ids: Counter[str] = Counter()
        self._seen_bodies: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()

    def stats(self) -> BatchStats:
        """A snapshot of the counters."""
        c = self._counts
        return BatchStats(
            requests=sum(self._routes.values()), requests_by_route=dict(self._routes),
            batches_created=c["batches"], items_submitted=c["items"],
            duplicate_custom_ids=sum(n - 1 for n in self._seen_ids.values() if n > 1),
            duplicate_bodies=sum(n - 1 for n in self._seen_bodies.values() if n > 1),
            items_failed=c["failed"], items_expired=c["expired"], cancelled=c["cancelled"])

    def submitted_custom_ids(self) -> Counter[str]:
        """How often each ``custom_id`` was submitted."""
        return Counter(self._seen_ids)

    def route(self, method: str, path: str) -> Callable[[web.BaseRequest],
                                                       Awaitable[web.StreamResponse]] | None:
        """The handler of a batch route, or None if ``path`` is not one."""
        for verb, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match is not None and verb == method:
                handler: Handler = getattr(self, f"_{name}")
                arg = match.group(1) if match.groups() else ""
                key = f"{verb} {pattern.pattern}"
                return lambda request: self._serve(request, handler, arg, key)
        return None

    async def _serve(self, request: web.BaseRequest, handler: Handler, arg: str,
                     key: str) -> web.StreamResponse:
        self._routes[key] += 1
        anthropic = "/messages/" in request.path
        fmt: OpenAIFormat | AnthropicFormat = formats()["anthropic" if anthropic else "openai"]
        if not self._authorized(request):
            return json_response(401, fmt.error(401, "Invalid API key (plait.testing)."))
        try:
            return await handler(request, arg)
        except (KeyError, ValueError, WireError) as exc:
            status = 404 if isinstance(exc, KeyError) else 400
            return json_response(status, fmt.error(status, f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------ OpenAI

    async def _upload(self, request: web.BaseRequest, _: str) -> web.StreamResponse:
        reader = await request.multipart()
        data = b""
        purpose = ""
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":  # by chunks: read() caps a part at 1 MB
                chunks = bytearray()
                while chunk := await part.read_chunk():
                    chunks += chunk
                data = bytes(chunks)
            elif part.name == "purpose":
                purpose = await part.text()
        if purpose != "batch" or not data:
            raise ValueError("expected purpose=batch and a non-empty file")
        file_id = f"file-plait{next(_ids)}"
        self._files[file_id] = data
        return json_response(200, {"id": file_id, "object": "file", "bytes": len(data),
                                   "purpose": "batch", "filename": "batch.jsonl"})

    async def _file_content(self, _: web.BaseRequest, file_id: str) -> web.StreamResponse:
        return web.Response(body=self._files[file_id], content_type="application/jsonl")

    async def _openai_create(self, request: web.BaseRequest, _: str) -> web.StreamResponse:
        body = json.loads(await request.content.read())
        raw = self._files[body["input_file_id"]]
        items: list[tuple[str, dict[str, Any]]] = []
        for line in raw.splitlines():
            if line.strip():
                entry = json.loads(line)
                items.append((str(entry["custom_id"]), dict(entry["body"])))
        batch = self._create("openai", items, "batch_plait")
        metadata = body.get("metadata")
        batch.metadata = dict(metadata) if isinstance(metadata, dict) else {}  # pyright: ignore[reportUnknownArgumentType]
        return json_response(200, self._openai_view(batch))

    async def _openai_list(self, request: web.BaseRequest, _: str) -> web.StreamResponse:
        newest = [b for b in reversed(self._batches.values()) if b.provider == "openai"]
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = newest[:limit]
        return json_response(200, {"object": "list",
                                   "data": [self._openai_view(b) for b in page],
                                   "has_more": len(newest) > limit})

    async def _openai_get(self, _: web.BaseRequest, batch_id: str) -> web.StreamResponse:
        batch = await self._advance(self._batches[batch_id])
        return json_response(200, self._openai_view(batch))

    def _openai_view(self, batch: _Batch) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
            "status": batch.status, "output_file_id": batch.output_file,
            "error_file_id": batch.error_file, "request_counts": {"total": len(batch.items)},
            "metadata": batch.metadata}
        if batch.status == "failed":
            view["errors"] = {"data": [{"code": "refused",
                                        "message": "plait.testing refused this batch"}]}
        return view

    # --------------------------------------------------------------- Anthropic

    async def _anthropic_create(self, request: web.BaseRequest, _: str) -> web.StreamResponse:
        body = json.loads(await request.content.read())
        items = [(str(r["custom_id"]), dict(r["params"])) for r in body["requests"]]
        batch = self._create("anthropic", items, "msgbatch_plait")
        return json_response(200, self._anthropic_view(batch, request))

    async def _anthropic_get(self, request: web.BaseRequest, batch_id: str
                             ) -> web.StreamResponse:
        batch = await self._advance(self._batches[batch_id])
        return json_response(200, self._anthropic_view(batch, request))

    def _anthropic_view(self, batch: _Batch, request: web.BaseRequest) -> dict[str, Any]:
        ended = batch.ended
        url = f"{request.scheme}://{request.host}/v1/messages/batches/{batch.id}/results"
        return {"id": batch.id, "type": "message_batch",
                "processing_status": "ended" if ended else (
                    "canceling" if batch.status == "cancelling" else "in_progress"),
                "results_url": url if ended else None}

    async def _anthropic_results(self, _: web.BaseRequest, batch_id: str
                                 ) -> web.StreamResponse:
        batch = self._batches[batch_id]
        if not batch.ended:
            raise ValueError(f"batch {batch_id} has not ended")
        lines = [json.dumps({"custom_id": cid, "result": batch.results[cid]})
                 for cid, _ in batch.items]
        return web.Response(body="\n".join(lines).encode(), content_type="application/jsonl")

    # ------------------------------------------------------------------ shared

    async def _cancel(self, request: web.BaseRequest, batch_id: str) -> web.StreamResponse:
        batch = self._batches[batch_id]
        if not batch.ended:
            batch.status = "cancelling"
            self._counts["cancelled"] += 1
            await self._finish(batch, cancelled=True)
        if batch.provider == "anthropic":
            return json_response(200, self._anthropic_view(batch, request))
        return json_response(200, self._openai_view(batch))

    def _create(self, provider: str, items: list[tuple[str, dict[str, Any]]],
                prefix: str) -> _Batch:
        batch = _Batch(f"{prefix}{next(_ids)}", provider, items, self._clock())
        self._batches[batch.id] = batch
        self._counts["batches"] += 1
        self._counts["items"] += len(items)
        for custom_id, body in items:
            self._seen_ids[custom_id] += 1
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            self._seen_bodies[digest] += 1
        return batch

    async def _advance(self, batch: _Batch) -> _Batch:
        script = self._script
        if (not batch.ended and not script.never_end
                and self._clock() - batch.created >= script.delay):
            await self._finish(batch, cancelled=False)
        return batch

    async def _finish(self, batch: _Batch, *, cancelled: bool) -> None:
        script = self._script
        fmt = formats()[batch.provider]  # type: ignore[index]
        output: list[str] = []
        errors: list[str] = []
        expired = False
        for custom_id, body in batch.items:
            req = fmt.parse(body)
            kind, payload = await self._item(req, script, cancelled)
            expired = expired or kind == "expired"
            batch.results[custom_id] = self._anthropic_result(kind, payload, fmt)
            line = self._openai_line(custom_id, kind, payload, fmt)
            if line is not None:
                (output if kind == "succeeded" else errors).append(line)
        batch.ended = True
        batch.status = ("failed" if script.refuse else "cancelled" if cancelled
                        else "expired" if expired else "completed")
        if batch.provider == "openai" and batch.status != "failed":
            batch.output_file = self._store(output)
            batch.error_file = self._store(errors)

    async def _item(self, req: ChatRequest, script: BatchScript, cancelled: bool
                    ) -> tuple[str, Any]:
        counts = self._counts
        if cancelled:
            return "canceled", None
        if script.refuse:
            return "errored", 400
        if (script.expire_match is not None and script.expire_match in req.user_text
                and (script.expire_limit is None or counts["expired"] < script.expire_limit)):
            counts["expired"] += 1
            return "expired", None
        if (script.fail_match is not None and script.fail_match in req.user_text
                and (script.fail_limit is None or counts["failed"] < script.fail_limit)):
            counts["failed"] += 1
            return "errored", script.fail_status
        text, tool_input = await self._reply(req)
        return "succeeded", (req, text, tool_input)

    def _store(self, lines: list[str]) -> str | None:
        if not lines:
            return None
        file_id = f"file-plait{next(_ids)}"
        self._files[file_id] = ("\n".join(lines) + "\n").encode()
        return file_id

    @staticmethod
    def _openai_line(custom_id: str, kind: str, payload: Any,
                     fmt: OpenAIFormat | AnthropicFormat) -> str | None:
        if kind == "canceled":
            return None  # a cancelled batch reports only what it finished
        row: dict[str, Any] = {"id": f"batch_req_plait{next(_ids)}", "custom_id": custom_id,
                               "response": None, "error": None}
        if kind == "succeeded":
            req, text, tool_input = payload
            row["response"] = {"status_code": 200, "request_id": "req_plait",
                               "body": fmt.reply(req, text, tool_input=tool_input)}
        elif kind == "errored":
            row["response"] = {"status_code": payload, "request_id": "req_plait",
                               "body": fmt.error(payload, "plait.testing scripted failure")}
        else:
            row["error"] = {"code": "batch_expired",
                            "message": "This request could not be executed before the "
                                       "completion window expired."}
        return json.dumps(row)

    @staticmethod
    def _anthropic_result(kind: str, payload: Any,
                          fmt: OpenAIFormat | AnthropicFormat) -> dict[str, Any]:
        if kind == "succeeded":
            req, text, tool_input = payload
            return {"type": "succeeded", "message": fmt.reply(req, text, tool_input=tool_input)}
        if kind == "errored":
            return {"type": "errored",
                    "error": fmt.error(payload, "plait.testing scripted failure")}
        return {"type": kind}
