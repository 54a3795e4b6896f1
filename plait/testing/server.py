"""``LLMServer``: a real HTTP server on loopback that speaks OpenAI and Anthropic.

Pipelines, clients and executors are tested against it with the real SDKs and real
sockets, offline and deterministically. It can be slowed down, rate-limited and made to
fail on a script, and it counts what it saw.

Endpoints: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/responses`` (OpenAI Responses
API), ``POST /v1/messages`` (Anthropic),
``GET /v1/models``, the batch APIs of both (``server.batches``, see
``plait.testing._batch_api``), and for scripting from other processes ``GET|POST /_control``,
``GET /_stats``, ``POST /_stats/reset`` and ``GET /_requests``.

Example:
    >>> async with LLMServer(latency=0.01) as server:
    ...     client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k")
    ...     reply = await client.chat.completions.create(
    ...         model="m", messages=[{"role": "user", "content": "hi"}])
    ...     reply.choices[0].message.content
    '[m] echo: hi'
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from aiohttp import web

from plait.errors import ConfigError
from plait.testing._batch_api import BatchEmulator
from plait.testing._config import Fault, ServerConfig
from plait.testing._faults import FaultPlan
from plait.testing._limits import ALL_MODELS, Limits
from plait.testing._replies import Replier, fault_response, json_response
from plait.testing._reply_faults import REPLY_FAULTS, reply_fault_response
from plait.testing._resources import DEFAULT_KEY, ServerURLs
from plait.testing._responses_wire import responses_format
from plait.testing._stats import ServerStats, StatsCounter
from plait.testing._wire import (
    AnthropicFormat,
    ChatRequest,
    OpenAIFormat,
    WireError,
    anthropic_format,
    openai_format,
)

if TYPE_CHECKING:
    from plait.testing._spawn import SpawnedServer
    from plait.testing._thread import ThreadedServer

__all__ = ["LLMServer", "RecordedRequest"]

_SHUTDOWN_TIMEOUT = 2.0  # seconds stop() waits for in-flight requests before cancelling


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server received; the body only, never headers (no keys)."""

    provider: str
    path: str
    model: str
    body: dict[str, Any]


class LLMServer(ServerURLs):
    """An offline OpenAI/Anthropic-compatible server on loopback.

    Args:
        host: Interface to bind; loopback by default.
        port: TCP port; 0 picks a free one (read it from ``base_url`` after start).
        config: Full settings; keyword settings below override its fields.
        clock: Monotonic clock of the rate limiter (tests may pass a fake one).
        **settings: Any ``ServerConfig`` field: ``latency``, ``latency_jitter``,
            ``rate_limit``, ``rate_burst``, ``max_concurrency``, ``faults``, ``seed``,
            ``require_api_key``, ``record_requests``, ``responder``, ...

    The default reply is ``"[<model>] echo: <first 200 characters of the last user
    message>"``; with a JSON schema it is a deterministic object valid for the schema.
    Usage is about four characters per token, in and out.

    Use ``async with LLMServer() as server`` in async code, ``with
    LLMServer().run_in_thread() as server`` in sync code, and ``with LLMServer.spawn() as
    server`` to run it in another process (benchmarks).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: ServerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        **settings: Any,
    ) -> None:
        self.host = host
        self.port = port
        self._clock = clock
        self._config = (config or ServerConfig()).updated(settings)
        self._stats = StatsCounter()
        self.requests: collections.deque[RecordedRequest] = collections.deque(
            maxlen=self._config.record_requests
        )
        self._runner: web.ServerRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._apply(self._config, rebuild_all=True)
        self._routes: dict[str, Callable[[web.BaseRequest], Any]] = {
            "/v1/chat/completions": self._openai_chat,
            "/v1/messages": self._anthropic_messages,
            "/v1/responses": self._openai_responses,
            "/v1/models": self._models,
            "/_control": self._control,
            "/_stats": self._stats_endpoint,
            "/_stats/reset": self._reset_endpoint,
            "/_requests": self._requests_endpoint,
        }
        # OpenAI Batch / Anthropic Message Batches (paths with ids, so matched after these).
        self.batches = BatchEmulator(
            lambda req: self._replier.reply(req),
            lambda r: self._config.require_api_key is None or self._authorized(r), clock)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> Self:
        """Bind the socket and start serving; returns self."""
        if self._runner is not None:
            return self
        self._stopping = asyncio.Event()
        server = web.Server(self._dispatch, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"Cannot listen on {self.host}:{self.port}: {exc}. Use port=0 for a free port."
            ) from exc
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop serving; in-flight requests get a short grace period, hangs end at once."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run_in_thread(self, *, timeout: float = 10.0) -> ThreadedServer:
        """Serve from a daemon thread with its own event loop, for sync code.

        Example:
            >>> with LLMServer(latency=0.01).run_in_thread() as server:
            ...     server.configure(rate_limit=50)
        """
        from plait.testing._thread import ThreadedServer

        return ThreadedServer(self, timeout=timeout)

    @staticmethod
    def spawn(
        host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0, **settings: Any
    ) -> SpawnedServer:
        """Run a server in a child process (``python -m plait.testing.server_cli``).

        Settings must be plain data (a responder as ``"module:function"``). The handle
        scripts the child over HTTP (``/_control``) and terminates it on exit.

        Example:
            >>> with LLMServer.spawn(latency=0.05) as server:
            ...     server.configure(rate_limit={"model-a": 100})
        """
        from plait.testing._spawn import SpawnedServer

        return SpawnedServer(host=host, port=port, timeout=timeout, settings=settings)

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._runner is None:
            raise RuntimeError("LLMServer is not running; use 'async with LLMServer() as s'.")
        return f"http://{self.host}:{self.port}"

    @property
    def _api_key(self) -> str | None:
        return self._config.require_api_key or DEFAULT_KEY

    # ------------------------------------------------------------ runtime control

    @property
    def config(self) -> ServerConfig:
        """The current settings (a copy is made by every ``configure``)."""
        return self._config

    def configure(self, **settings: Any) -> None:
        """Change settings now; unknown names raise ``ConfigError`` listing valid ones.

        Passing ``faults`` replaces the fault list and restarts its counters; other
        settings leave the faults' progress alone.
        """
        new = self._config.updated(settings)
        self._apply(new, rebuild_all=False, changed=set(settings))

    def add_faults(self, *faults: Fault | Mapping[str, Any] | str) -> None:
        """Append faults after those still pending (their counters restart)."""
        added = [f if isinstance(f, Fault) else Fault.from_dict(f) for f in faults]
        self.configure(faults=self._faults.pending() + added)

    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters and forget recorded requests."""
        self._stats.reset()
        self.batches.reset_stats()
        self.requests.clear()

    def _apply(
        self, config: ServerConfig, *, rebuild_all: bool, changed: set[str] | None = None
    ) -> None:
        changed = changed or set()
        # The responder import is the step that can fail; do it before changing anything.
        if rebuild_all or "responder" in changed:
            self._replier = Replier(config.responder)
        if rebuild_all or changed & {"rate_limit", "rate_burst", "max_concurrency"}:
            self._limits = Limits(
                config.rate_limit, config.rate_burst, config.max_concurrency, self._clock
            )
        if rebuild_all or changed & {"faults", "seed"}:
            self._faults = FaultPlan(config.faults, config.seed)
        if rebuild_all or "seed" in changed:
            self._rng = random.Random(config.seed)
        if "record_requests" in changed:
            self.requests = collections.deque(self.requests, maxlen=config.record_requests)
        latency = config.latency
        self._latency: dict[str, float] = (
            dict(latency) if isinstance(latency, dict) else {ALL_MODELS: float(latency)}
        )
        self._config = config

    # -------------------------------------------------------------- request path

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get(request.path) or self.batches.route(request.method,
                                                                     request.path)
        if route is None:
            return json_response(404, openai_format.error(404, f"No route {request.path}"))
        return await route(request)

    async def _openai_chat(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._chat(request, openai_format)

    async def _anthropic_messages(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._chat(request, anthropic_format)

    async def _openai_responses(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._chat(request, responses_format)

    async def _chat(
        self, request: web.BaseRequest, fmt: OpenAIFormat | AnthropicFormat
    ) -> web.StreamResponse:
        stats = self._stats
        if request.method != "POST":
            return self._error(fmt, 405, f"{request.path} takes POST.")
        if self._config.require_api_key is not None and not self._authorized(request):
            return self._error(fmt, 401, "Invalid API key (plait.testing require_api_key).")
        try:
            body = json.loads(await request.read())
            req = fmt.parse(body)
        except (ValueError, WireError) as exc:
            return self._error(fmt, 400, f"Invalid request: {exc}")
        model = req.model
        stats.received(model)
        if self.requests.maxlen:
            self.requests.append(RecordedRequest(fmt.provider, request.path, model, body))
        if self._limits.active:
            refused = self._check_limits(fmt, model)
            if refused is not None:
                return refused
        stats.enter(model)
        try:
            delay = self._latency_for(model)
            if delay > 0:
                await asyncio.sleep(delay)
            fault = self._faults.pick(model, req.user_text) if self._faults else None
            if fault is not None:
                stats.fault(fault.kind)
                return await self._fault(request, fmt, req, fault)
            return await self._success(fmt, req)
        finally:
            stats.leave(model)

    async def _success(
        self, fmt: OpenAIFormat | AnthropicFormat, req: ChatRequest
    ) -> web.StreamResponse:
        try:
            text, tool_input = await self._replier.reply(req)
        except Exception as exc:  # a user's responder failed: tell the client, keep serving
            return self._error(fmt, 500, f"responder raised {type(exc).__name__}: {exc}")
        reply = fmt.reply(req, text, tool_input=tool_input)
        usage = reply["usage"]
        stats = self._stats
        stats.prompt_tokens += usage.get("prompt_tokens", usage.get("input_tokens", 0))
        stats.completion_tokens += usage.get("completion_tokens", usage.get("output_tokens", 0))
        stats.responded(200)
        return json_response(200, reply)

    async def _fault(
        self, request: web.BaseRequest, fmt: OpenAIFormat | AnthropicFormat,
        req: ChatRequest, fault: Fault,
    ) -> web.StreamResponse:
        if fault.kind == "hang":
            await self._wait_stopping(fault.hang_seconds)
        if fault.kind in REPLY_FAULTS:
            text, tool_input = await self._replier.reply(req)
            reply = await reply_fault_response(request, fmt, req, fault, text, tool_input)
            self._stats.responded(reply.status)
            return reply
        response = await fault_response(request, fmt, req, fault, self._config.retry_hint)
        if response.status != 200:
            self._stats.responded(response.status)
        return response

    def _check_limits(
        self, fmt: OpenAIFormat | AnthropicFormat, model: str
    ) -> web.StreamResponse | None:
        wait = self._limits.rate_wait(model)
        if wait > 0:
            return self._rate_limited(fmt, wait, f"Rate limit reached for {model} (plait.testing).")
        stats = self._stats
        if self._limits.over_concurrency(
            model, stats.in_flight_by_model.get(model, 0), stats.in_flight
        ):
            return self._rate_limited(
                fmt, self._config.busy_retry_after,
                f"Too many concurrent requests for {model} (plait.testing).",
            )
        return None

    def _latency_for(self, model: str) -> float:
        latency = self._latency
        delay = latency.get(model, latency.get(ALL_MODELS, 0.0))
        jitter = self._config.latency_jitter
        return delay + self._rng.uniform(0.0, jitter) if jitter else delay

    async def _wait_stopping(self, seconds: float) -> None:
        assert self._stopping is not None  # set in start(), before any request
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _authorized(self, request: web.BaseRequest) -> bool:
        key = self._config.require_api_key
        headers = request.headers
        return (
            headers.get("x-api-key") == key or headers.get("Authorization") == f"Bearer {key}"
        )

    def _error(
        self, fmt: OpenAIFormat | AnthropicFormat, status: int, message: str
    ) -> web.Response:
        self._stats.responded(status)
        return json_response(status, fmt.error(status, message))

    def _rate_limited(
        self, fmt: OpenAIFormat | AnthropicFormat, wait: float, message: str
    ) -> web.Response:
        self._stats.responded(429)
        return json_response(429, fmt.error(429, message), retry_after=wait,
                             retry_hint=self._config.retry_hint)

    # ------------------------------------------------------------ side endpoints

    async def _models(self, request: web.BaseRequest) -> web.StreamResponse:
        models = sorted(self._stats.requests_by_model) or ["plait-test-model"]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "plait"} for m in models]
        return json_response(200, {"object": "list", "data": data})

    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            try:
                changes: Any = json.loads(await request.read() or b"{}")
                if not isinstance(changes, dict):
                    raise ConfigError("/_control takes a JSON object of settings.")
                self._control_update(cast("dict[str, Any]", changes))
            except (ValueError, TypeError) as exc:  # ConfigError is a ValueError
                return json_response(400, {"error": {"message": str(exc), "type": "config"}})
        return json_response(200, self._config.to_dict())

    def _control_update(self, changes: dict[str, Any]) -> None:
        reset = changes.pop("reset_stats", False)
        added = changes.pop("add_faults", None)
        if changes:
            self.configure(**changes)
        if added:
            self.add_faults(*added)
        if reset:
            self.reset_stats()

    async def _stats_endpoint(self, request: web.BaseRequest) -> web.StreamResponse:
        return json_response(200, self.stats().to_dict())

    async def _reset_endpoint(self, request: web.BaseRequest) -> web.StreamResponse:
        self.reset_stats()
        return json_response(200, self.stats().to_dict())

    async def _requests_endpoint(self, request: web.BaseRequest) -> web.StreamResponse:
        rows = [
            {"provider": r.provider, "path": r.path, "model": r.model, "body": r.body}
            for r in self.requests
        ]
        return json_response(200, {"requests": rows})
