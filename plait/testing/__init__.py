"""Offline testing for plait: a loopback LLM server that speaks OpenAI and Anthropic.

``LLMServer`` is a real HTTP server on 127.0.0.1, so the real SDKs and plait's own clients
are tested end to end without network access or keys. Replies are deterministic (an echo
of the user's message, or schema-valid JSON); latency, rate caps, concurrency caps and
faults are scriptable from Python, over HTTP (``POST /_control``) or from the CLI
(``plait-testing-server``). Pytest users get a ``plait_testing_server`` fixture with
``pytest_plugins = ["plait.testing.pytest_plugin"]``.

Example:
    >>> from plait.testing import Fault, LLMServer
    >>> with LLMServer(faults=[Fault("429", retry_after=1)]).run_in_thread() as server:
    ...     resources = server.resource_config({"fast": "model-a"})
"""

from plait.testing._config import Fault, FaultKind, Responder, ServerConfig
from plait.testing._replies import default_reply
from plait.testing._schema_fake import fake_json
from plait.testing._spawn import SpawnedServer
from plait.testing._stats import ServerStats
from plait.testing._thread import ThreadedServer
from plait.testing._wire import ChatRequest
from plait.testing.server import LLMServer, RecordedRequest

__all__ = [
    "ChatRequest",
    "Fault",
    "FaultKind",
    "LLMServer",
    "RecordedRequest",
    "Responder",
    "ServerConfig",
    "ServerStats",
    "SpawnedServer",
    "ThreadedServer",
    "default_reply",
    "fake_json",
]
