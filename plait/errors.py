"""Every error plait raises, in one tree.

Retry decisions are made from data (``retryable``, ``status``, ``retry_after``), never from
message strings. Foreign exceptions (aiohttp, openai, anthropic) are mapped into this tree in
one place per client (``plait.clients._errors``).

```
PlaitError
├── ConfigError                 bad ResourceConfig / EndpointConfig / settings / YAML
│   ├── MissingAPIKeyError      the provider's key is not set
│   └── UnknownAliasError       an alias not in the ResourceConfig (also a KeyError)
├── ModuleDefinitionError       a Module defined wrongly (forgot super().__init__(), ...)
├── TraceError                  forward() did something tracing cannot capture
├── InputError                  a call's inputs do not fit forward() (batch shapes, ...)
├── CallError                   a call used wrongly (an unrun call used as a value, run_sync
│                               on plait's own loop)
├── LLMError                    one LLM request failed (status, retry_after, retryable)
│   ├── TransientError          the kinds retried by default (catch this for "try later")
│   │   ├── RateLimitError      429
│   │   ├── ServerError         5xx
│   │   ├── APIConnectionError  connection refused / reset
│   │   │   └── APITimeoutError no answer in time
│   │   └── ResponseFormatError malformed body, empty choices, schema validation failure
│   └── BadRequestError         4xx other than 429 (not retried)
├── FunctionalError             a plait.functional op got a value it cannot use
├── NodeExecutionError          a node failed; names node, module path, alias, source line
├── BatchError                  some rows of a batch failed; carries every failure + outputs
├── CheckpointError             a checkpoint does not match or cannot be read
├── BudgetExceededError         a row was not started: budget_usd would be exceeded
├── BatchingError               micro-batcher misuse (plait.batching)
│   ├── QueueFullError          backpressure="drop" and the queue is full
│   ├── ExecutorOutputError     a batch executor returned the wrong number of outputs
│   └── BatcherClosedError      submitting to a closed batcher
└── OptimizationError           backward passes and optimizer steps (plait.optim)
    ├── BackwardError           backward() on an output that cannot carry feedback
    └── JudgeReplyError         an LLM judge replied something unparseable

plait_ray adds: WorkerLostError (a Ray worker died), RayConnectionError (Ray unreachable),
LimiterUnavailableError (an endpoint's limiter actor is gone), UnpicklableError (a row error
that cannot cross processes, kept as type name and message), ReplicaUnavailableError (an
APIConnectionError: a local-model replica died; retried), JobError / JobSubmissionError /
JobFailedError / JobTimeoutError (Ray Jobs).
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "BadRequestError",
    "BatchError",
    "BatchingError",
    "BudgetExceededError",
    "CallError",
    "CheckpointError",
    "ConfigError",
    "FunctionalError",
    "InputError",
    "LLMError",
    "MissingAPIKeyError",
    "ModuleDefinitionError",
    "NodeExecutionError",
    "PlaitError",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "TraceError",
    "TransientError",
    "UnknownAliasError",
]


class PlaitError(Exception):
    """Base class of every error plait raises.

    Attributes:
        message: The error's message (``str(error)``).
    """

    @property
    def message(self) -> str:
        """The error's message, as ``str(error)``."""
        return str(self)


class ConfigError(PlaitError, ValueError):
    """A configuration value is wrong; the message names it and the fix."""


class MissingAPIKeyError(ConfigError):
    """The provider's API key is neither given nor in the environment."""

    def __init__(
        self, env_var: str, alias: str | None = None, *, inline_withheld: bool = False
    ) -> None:
        where = f" for endpoint '{alias}'" if alias else ""
        if inline_withheld:
            # The config was made with api_key=... in another process (or unpickled here).
            fix = (
                f"The endpoint was given api_key=... where it was made, but an inline key is "
                f"never sent to another process (Ray workers, checkpoints): set {env_var} "
                "in this process's environment."
            )
        else:
            fix = (
                "Set it or pass api_key=... ; to run offline use plait.testing (a loopback "
                "LLM server)."
            )
        super().__init__(f"{env_var} is not set{where}. {fix}")
        self.env_var = env_var
        self.alias = alias
        self.inline_withheld = inline_withheld

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in Ray workers too; rebuild from the fields, not from the message.
        return (_rebuild_missing_key, (type(self), self.env_var, self.alias, self.inline_withheld))


def _rebuild_missing_key(
    cls: type[MissingAPIKeyError], env_var: str, alias: str | None, inline_withheld: bool
) -> MissingAPIKeyError:
    return cls(env_var, alias, inline_withheld=inline_withheld)


class UnknownAliasError(ConfigError, KeyError):
    """An alias looked up in a ResourceConfig that does not define it; names the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote the message


class ModuleDefinitionError(PlaitError, TypeError):
    """A Module subclass is defined in a way plait cannot use."""


class TraceError(PlaitError):
    """forward() did something that tracing cannot capture."""


class InputError(PlaitError, TypeError):
    """The inputs of a call do not fit the pipeline's forward()."""


class CallError(PlaitError, TypeError):
    """A module call used in a way that cannot run; the message gives the right way."""


class LLMError(PlaitError):
    """One LLM request failed.

    Attributes:
        status: HTTP status, or None when no response arrived.
        retry_after: Seconds the server asked us to wait, if it said.
        retryable: Whether plait may retry the request.
        alias: The endpoint alias the request went to.
        body: A short excerpt of the response body (never headers, never keys).
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        alias: str | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = self.default_retryable if retryable is None else retryable
        self.alias = alias
        self.body = body

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (Ray); keep every field through pickling.
        return (
            _rebuild_llm_error,
            (type(self), str(self), self.status, self.retry_after, self.retryable, self.alias,
             self.body),
        )


def _rebuild_llm_error(
    cls: type[LLMError],
    message: str,
    status: int | None,
    retry_after: float | None,
    retryable: bool,
    alias: str | None,
    body: str | None,
) -> LLMError:
    err = LLMError.__new__(cls)
    LLMError.__init__(
        err, message, status=status, retry_after=retry_after, retryable=retryable, alias=alias,
        body=body,
    )
    return err


class TransientError(LLMError):
    """A failure that may pass if retried later (429, 5xx, connection, malformed reply).

    plait retries these within the endpoint's budget; one that still escapes is a
    ``TransientError``, so ``except TransientError`` means "worth trying again later".
    A custom client or leaf module may raise it directly.
    """

    default_retryable = True


class RateLimitError(TransientError):
    """HTTP 429: the provider asked us to slow down."""

    default_retryable = True


class ServerError(TransientError):
    """HTTP 5xx: the provider failed; retried with backoff."""

    default_retryable = True


class APIConnectionError(TransientError):
    """The connection failed (refused, reset, DNS); retried with backoff."""

    default_retryable = True


class APITimeoutError(APIConnectionError):
    """No complete answer within the endpoint's timeout; retried with backoff."""


class BadRequestError(LLMError):
    """HTTP 4xx other than 429; a retry would fail the same way."""


class ResponseFormatError(TransientError):
    """The response was malformed or failed validation; retried within the retry budget."""

    default_retryable = True


class NodeExecutionError(PlaitError):
    """A node of the graph failed while executing.

    Attributes:
        node_id: The graph node's id.
        module_path: Dotted path of the module that owns the node ("" for the root).
        alias: The endpoint alias, for LLM nodes.
        source: "file.py:line" where the node was traced.
        cause: The underlying error.
    """

    def __init__(
        self,
        *,
        node_id: str,
        module_path: str,
        module_type: str,
        alias: str | None,
        source: str,
        cause: BaseException,
    ) -> None:
        alias_part = f", alias='{alias}'" if alias else ""
        status = getattr(cause, "status", None)
        status_part = f" [status {status}]" if status is not None else ""
        super().__init__(
            f"While executing node '{node_id}' ({module_type}{alias_part}, "
            f"module '{module_path or '<root>'}'), traced at {source}:{status_part} "
            f"{type(cause).__name__}: {cause}"
        )
        self.node_id = node_id
        self.module_path = module_path
        self.module_type = module_type
        self.alias = alias
        self.source = source
        self.cause = cause
        self.status = status
        # Also when rebuilt from a pickle (Ray): the user's exception stays the chained cause.
        self.__cause__ = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_node_error,
            (self.node_id, self.module_path, self.module_type, self.alias, self.source,
             self.cause),
        )


def _rebuild_node_error(
    node_id: str,
    module_path: str,
    module_type: str,
    alias: str | None,
    source: str,
    cause: BaseException,
) -> NodeExecutionError:
    return NodeExecutionError(
        node_id=node_id, module_path=module_path, module_type=module_type, alias=alias,
        source=source, cause=cause,
    )


class BatchError(PlaitError):
    """Some rows of a batch failed.

    Attributes:
        failures: Input index -> the error of that row, for every failed row.
        outputs: One entry per input: the output, or None where the row failed.
    """

    def __init__(self, failures: Mapping[int, BaseException], outputs: Sequence[Any]) -> None:
        self.failures: dict[int, BaseException] = dict(failures)
        self.outputs: list[Any] = list(outputs)
        first = sorted(self.failures)[:3]
        detail = "; ".join(f"row {i}: {self.failures[i]}" for i in first)
        more = "" if len(self.failures) <= 3 else f" (and {len(self.failures) - 3} more)"
        super().__init__(
            f"{len(self.failures)} of {len(self.outputs)} rows failed: {detail}{more}. "
            "The successful outputs are in .outputs, every failure in .failures; use "
            "ExecutionSettings(streaming=True) to receive per-row BatchResults instead."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (BatchError, (self.failures, self.outputs))


class FunctionalError(PlaitError, ValueError):
    """A ``plait.functional`` op got a value it cannot use; the message names it."""


class CheckpointError(PlaitError):
    """A checkpoint cannot be used as asked."""


class BudgetExceededError(PlaitError):
    """A row was not started because the run's ``budget_usd`` would be exceeded.

    Its row is left for a later run (with ``checkpoint_dir``, finished rows are kept).
    """


class BatchingError(PlaitError):
    """The micro-batcher was misused or overloaded."""
