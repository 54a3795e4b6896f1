"""Running the loopback server in a child process, scripted over HTTP.

Benchmarks use this so the server gets its own core (and its own GIL) instead of
sharing the event loop of the code under test.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any, Self

from plait.testing._config import Fault
from plait.testing._resources import DEFAULT_KEY, ServerURLs
from plait.testing._stats import ServerStats

__all__ = ["SpawnedServer"]


class SpawnedServer(ServerURLs):
    """A handle on ``python -m plait.testing.server_cli`` running as a child process.

    Made by ``LLMServer.spawn(**settings)``; starts on ``__enter__`` (or ``start()``) and is
    terminated on exit. ``configure``, ``add_faults``, ``stats``, ``reset_stats`` and
    ``requests`` go over HTTP to ``/_control``, ``/_stats`` and ``/_requests``.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._timeout = timeout
        self._settings = dict(settings or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None

    def start(self) -> Self:
        """Start the child and wait (at most ``timeout``) for its base URL line."""
        if self._proc is not None:
            return self
        cmd = [
            sys.executable, "-m", "plait.testing.server_cli", "--host", self.host,
            "--port", str(self.port), "--config", json.dumps(self._settings),
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            line = self._read_first_line(self._proc)
            self._base_url = json.loads(line)["base_url"]
        except BaseException:
            self.stop()
            raise
        return self

    def _read_first_line(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None  # Popen(stdout=PIPE) above
        deadline = time.monotonic() + self._timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"plait-testing-server printed no base URL within {self._timeout}s."
                    )
                if sel.select(left):
                    # One raw read: never blocks past what the child has written.
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        raise RuntimeError(
                            f"plait-testing-server exited (code {proc.poll()}) before "
                            "printing its base URL; see its stderr above."
                        )
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def stop(self) -> None:
        """Terminate the child; kill it if it has not exited within ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self._timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self._timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the child server."""
        if self._base_url is None:
            raise RuntimeError("The spawned server is not running; use 'with LLMServer.spawn()'.")
        return self._base_url

    @property
    def _api_key(self) -> str | None:
        return self._settings.get("require_api_key") or DEFAULT_KEY

    def _http(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"{method} {path} failed with {exc.code}: {detail}") from exc

    def configure(self, **settings: Any) -> None:
        """Change settings in the child (``POST /_control``); see ``LLMServer.configure``."""
        if "faults" in settings:
            settings["faults"] = [_fault_data(f) for f in settings["faults"]]
        self._http("POST", "/_control", settings)

    def add_faults(self, *faults: Fault | dict[str, Any] | str) -> None:
        """Append faults in the child; see ``LLMServer.add_faults``."""
        self._http("POST", "/_control", {"add_faults": [_fault_data(f) for f in faults]})

    def stats(self) -> ServerStats:
        """The child's counters (``GET /_stats``)."""
        return ServerStats.from_dict(self._http("GET", "/_stats"))

    def reset_stats(self) -> None:
        """Zero the child's counters (``POST /_stats/reset``)."""
        self._http("POST", "/_stats/reset", {})

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded requests as dicts ``{provider, path, model, body}`` (``GET /_requests``)."""
        return self._http("GET", "/_requests")["requests"]


def _fault_data(fault: Fault | dict[str, Any] | str) -> dict[str, Any] | str:
    return fault.to_dict() if isinstance(fault, Fault) else fault
