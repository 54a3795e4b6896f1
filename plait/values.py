"""``Value``: a payload with its kind, the node that produced it, and metadata.

plait passes plain Python values by default: a pipeline returns ``str``, models, dicts. A
``Value`` is the opt-in container for when the *metadata* matters or when errors should travel
as data instead of being raised:

- ``LLMInference(..., as_value=True)`` makes an LLM node return a ``Value`` whose ``meta``
  holds ``alias``, ``model``, ``input_tokens``, ``output_tokens``, ``cost_usd`` and
  ``latency_s`` (see :data:`LLM_META_KEYS`), and whose ``ref`` is the node id.
- ``valueify(batch_result)`` turns a streamed ``BatchResult`` into a ``Value``, or an ``ERROR``
  Value carrying the row's exception. ERROR Values exist only where a user asked for them;
  a plain ``await pipeline(x)`` still raises.
- ``plait.functional`` ops take and give Values: a Value in gives a Value out, and an ERROR
  Value in flows through unchanged, so errors can be handled at the end (``F.unwrap_or``).

While ``forward()`` is traced, a Value-producing node is a placeholder (a ``Proxy``) like any
other: use ``plait.functional`` ops, ``value.payload`` or ``value.meta["input_tokens"]`` on it
and they become graph nodes. ``Value(...)`` cannot wrap a placeholder; use ``F.valueify``.

Example:
    >>> v = valueify("hello")
    >>> v.kind, v.payload
    (<ValueKind.TEXT: 'text'>, 'hello')
    >>> unwrap(v)
    'hello'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, SerializationInfo, model_serializer

from plait.errors import BatchError, CheckpointError, PlaitError, TraceError
from plait.tracing.context import active_tracer, user_source_location

__all__ = ["LLM_META_KEYS", "Value", "ValueKind", "batch_values", "error_of", "infer_kind",
           "llm_value", "unwrap", "valueify"]

LLM_META_KEYS = ("alias", "model", "input_tokens", "output_tokens", "cost_usd", "latency_s")
"""The ``meta`` keys of an LLM node's Value (``LLMInference(..., as_value=True)``)."""


class ValueKind(StrEnum):
    """What a ``Value``'s payload is."""

    TEXT = "text"
    """Plain text."""
    FSTRING = "fstring"
    """A format template with ``{name}`` fields."""
    RESPONSE = "response"
    """An LLM reply; model, tokens, cost and latency are in ``meta``."""
    STRUCTURED = "structured"
    """A dict, list, tuple or pydantic model."""
    INT = "int"
    """An integer."""
    FLOAT = "float"
    """A float."""
    ERROR = "error"
    """A failure: the payload is the exception (or its stored record after a resume)."""
    TOOL_RESULT = "tool_result"
    """The result of a tool call."""
    BINARY = "binary"
    """Bytes."""
    OTHER = "other"
    """Anything else (booleans, None, custom objects)."""


class Value(BaseModel):
    """A payload with its kind, producing node (``ref``) and metadata.

    Args:
        kind: What the payload is.
        payload: The data (text, a model, a dict, a number, an exception for ERROR).
        ref: Id of the graph node that produced it, if any.
        meta: Metadata, e.g. an LLM node's alias, model, tokens, cost and latency.

    Values are immutable; ``with_meta`` returns a copy. They pickle (Ray) and are stored in
    checkpoints without pickle, payload and meta included.

    Example:
        >>> Value(ValueKind.TEXT, "hi", meta={"source": "user"}).with_meta(lang="en").meta
        {'source': 'user', 'lang': 'en'}
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: ValueKind
    payload: Any
    ref: str | None = None
    meta: dict[str, Any] = {}

    def __init__(
        self,
        kind: ValueKind | str,
        payload: Any,
        ref: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if active_tracer() is not None and _holds_placeholder(payload):
            raise TraceError(
                f"Value(...) was given a traced value at {user_source_location()}. While "
                "tracing, values are placeholders; wrap them with "
                "plait.functional.valueify(x, kind=...) instead, which becomes a graph node."
            )
        super().__init__(kind=kind, payload=payload, ref=ref, meta=dict(meta or {}))

    @property
    def is_error(self) -> bool:
        """True for an ERROR Value."""
        return self.kind is ValueKind.ERROR

    def with_meta(self, **meta: Any) -> Value:
        """A copy with ``meta`` added (later keys win)."""
        return Value(self.kind, self.payload, self.ref, {**self.meta, **meta})

    def __str__(self) -> str:
        # f"{value}" in a prompt means the payload's text, not the container's repr.
        return str(self.payload)

    def __repr__(self) -> str:
        ref = f", ref={self.ref!r}" if self.ref is not None else ""
        meta = f", meta={self.meta!r}" if self.meta else ""
        return f"Value({self.kind.name}, {self.payload!r}{ref}{meta})"

    # --- storage: checkpoints keep payload and meta exactly (tuples, models, errors) ------
    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any, info: SerializationInfo) -> Any:
        if info.mode != "json":
            return handler(self)
        from plait.serialize import to_jsonable

        return {"kind": self.kind.value, "ref": self.ref, "encoded": True,
                "payload": to_jsonable(self.payload), "meta": to_jsonable(self.meta)}

    @classmethod
    def from_stored(cls, data: Any, decode: Callable[[Any], Any]) -> Value:
        """Rebuild a Value from its stored (JSON) form; ``decode`` restores tagged data.

        Raises:
            CheckpointError: ``data`` is not a stored Value.
        """
        if not (isinstance(data, dict) and cast(dict[str, Any], data).get("encoded") is True):
            raise CheckpointError(f"A stored Value is malformed: {data!r:.120}.")
        stored = cast(dict[str, Any], data)
        try:
            kind = ValueKind(stored["kind"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"A stored Value has no valid kind: {data!r:.120}.") from exc
        meta: Any = decode(stored.get("meta") or {})
        ref = stored.get("ref")
        return cls(kind, decode(stored.get("payload")), ref if isinstance(ref, str) else None,
                   cast(dict[str, Any], meta) if isinstance(meta, dict) else {})


def infer_kind(x: Any) -> ValueKind:
    """The ``ValueKind`` plait infers for a plain Python value."""
    if isinstance(x, Value):
        return x.kind
    if isinstance(x, str):
        return ValueKind.TEXT
    if isinstance(x, bool) or x is None:
        return ValueKind.OTHER
    if isinstance(x, int):
        return ValueKind.INT
    if isinstance(x, float):
        return ValueKind.FLOAT
    if isinstance(x, bytes | bytearray):
        return ValueKind.BINARY
    if isinstance(x, dict | list | tuple | BaseModel):
        return ValueKind.STRUCTURED
    if isinstance(x, BaseException):
        return ValueKind.ERROR
    return ValueKind.OTHER


def valueify(x: Any, *, kind: ValueKind | str | None = None) -> Value:
    """Wrap ``x`` in a ``Value`` (a Value is returned as is, or re-kinded).

    Streamed rows (``BatchResult``) and executor rows become their output's Value, or an
    ERROR Value carrying the row's exception; ``meta["row"]`` is the row index. Exceptions
    become ERROR Values. Inside a traced forward(), use ``plait.functional.valueify`` (the
    same function as a graph node).

    Args:
        x: Any value.
        kind: Force this kind instead of inferring it.

    Example:
        >>> valueify(3).kind
        <ValueKind.INT: 'int'>
        >>> valueify(ValueError("bad")).is_error
        True
    """
    if isinstance(x, Value):
        if kind is None or ValueKind(kind) is x.kind:
            return x
        return Value(kind, x.payload, x.ref, x.meta)
    row = _row_result(x)
    if row is not None:
        index, output, error = row
        if error is not None:
            return Value(ValueKind.ERROR, error, meta={"row": index})
        return valueify(output, kind=kind).with_meta(row=index)
    return Value(kind if kind is not None else infer_kind(x), x)


def batch_values(error: BatchError) -> list[Value]:
    """Every row of a failed batch as a ``Value``, in input order.

    The outputs, and an ERROR Value (carrying the row's exception) where a row failed;
    ``meta["row"]`` is the row's index. (A function here rather than a ``BatchError`` method:
    ``plait.errors`` is the root of the package and imports nothing from it.)

    Example:
        >>> except BatchError as error:
        ...     texts = [F.unwrap_or(v, "n/a") for v in batch_values(error)]
    """
    return [Value(ValueKind.ERROR, error.failures[i], meta={"row": i}) if i in error.failures
            else valueify(output).with_meta(row=i) for i, output in enumerate(error.outputs)]


def unwrap(v: Any) -> Any:
    """The plain data inside ``v``: payloads of Values, also inside lists, tuples and dicts.

    Raises:
        Exception: ``v`` is (or holds) an ERROR Value: its error is raised, so a failure is
            never mistaken for data. Use ``plait.functional.unwrap_or`` for a fallback.
    """
    if isinstance(v, Value):
        if v.is_error:
            raise error_of(v)
        return v.payload
    if isinstance(v, list):
        return [unwrap(item) for item in cast(list[Any], v)]
    if isinstance(v, tuple):
        return tuple(unwrap(item) for item in cast(tuple[Any, ...], v))
    if isinstance(v, dict):
        return {key: unwrap(item) for key, item in cast(dict[Any, Any], v).items()}
    return v


def error_of(v: Value) -> BaseException:
    """The exception an ERROR Value carries (a stored record becomes a ``PlaitError``)."""
    payload = v.payload
    if isinstance(payload, BaseException):
        return payload
    where = f" from node '{v.ref}'" if v.ref else ""
    return PlaitError(f"Error value{where}: {payload}")


def llm_value(
    value: Value, *, alias: str, node_id: str, response: Any, config: Any, latency: float
) -> Value:
    """An LLM node's Value with the call's metadata (see :data:`LLM_META_KEYS`).

    Args:
        value: The parsed reply as a Value (from ``LLMInference.parse``).
        alias: The endpoint alias.
        node_id: The graph node (becomes ``ref``).
        response: The provider-neutral ``LLMResponse``.
        config: The endpoint's config (model name, prices per million tokens).
        latency: Seconds from sending (including waits and retries) to the parsed reply.
    """
    from plait.pricing._cost import endpoint_price

    usage = response.usage
    cost = endpoint_price(config).cost(usage.input_tokens, usage.output_tokens)
    meta = {"alias": alias, "model": response.model or getattr(config, "model", ""),
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": cost, "latency_s": latency}
    return Value(value.kind, value.payload, node_id, {**value.meta, **meta})


def _row_result(x: Any) -> tuple[int, Any, BaseException | None] | None:
    # BatchResult and RowResult share index/output/error; imported lazily (execution imports
    # values through functional, not the other way round).
    from plait.execution.results import BatchResult, RowResult

    if isinstance(x, BatchResult | RowResult):
        return x.index, x.output, x.error
    return None


def _holds_placeholder(payload: Any) -> bool:
    from plait.tracing.proxy import SENTINEL_CHARS, Proxy

    if isinstance(payload, Proxy):
        return True
    if isinstance(payload, str):
        return bool(SENTINEL_CHARS.intersection(payload))
    if isinstance(payload, list | tuple):
        return any(_holds_placeholder(p) for p in cast(list[Any], payload))
    if isinstance(payload, dict):
        return any(_holds_placeholder(p) for p in cast(dict[Any, Any], payload).values())
    return False
