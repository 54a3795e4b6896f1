"""Value, response, error and collection ops.

extract_text, extract_meta, with_meta, unwrap_or, is_error, valueify, unwrap, map_values,
zip_values, stack_structured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from pydantic import BaseModel

from plait import values as _values
from plait.errors import FunctionalError
from plait.functional._op import op
from plait.functional._wrap import value_aware
from plait.values import Value, ValueKind, error_of, infer_kind

__all__ = ["extract_meta", "extract_text", "is_error", "map_values", "stack_structured",
           "unwrap", "unwrap_or", "valueify", "with_meta", "zip_values"]


@op
def valueify(x: Any, kind: ValueKind | str | None = None) -> Value:
    """``plait.values.valueify`` as an op: wraps a traced value as a graph node.

    Example:
        >>> F.valueify("hi").kind
        <ValueKind.TEXT: 'text'>
    """
    return _values.valueify(x, kind=ValueKind(kind) if kind is not None else None)


@op
def unwrap(x: Any) -> Any:
    """``plait.values.unwrap`` as an op: the payload; an ERROR Value raises its error."""
    return _values.unwrap(x)


@op
def extract_text(response: Any) -> str:
    """The text of an LLM reply.

    Accepts a RESPONSE/TEXT ``Value``, a str, a pydantic model (its JSON), or a provider body
    as a dict (OpenAI chat ``choices[0].message.content``, OpenAI Responses ``output_text``
    or ``output[].content[].text``, Anthropic ``content[].text``).

    Raises:
        Exception: ``response`` is an ERROR Value (its error is raised).
        FunctionalError: No text can be found (the message names the shape).
    """
    payload = response
    if isinstance(response, Value):
        if response.is_error:
            raise error_of(response)
        payload = response.payload
    if isinstance(payload, str):
        return payload
    if isinstance(payload, BaseModel):
        return payload.model_dump_json()
    if isinstance(payload, Mapping):
        text = _text_of_body(cast(Mapping[str, Any], payload))  # pyright: ignore[reportUnknownArgumentType]
        if text is not None:
            return text
    raise FunctionalError(
        f"F.extract_text found no text in a {type(cast(object, payload)).__name__}: "
        f"{payload!r:.120}."
    )


def _text_of_body(body: Mapping[str, Any]) -> str | None:
    if isinstance(body.get("output_text"), str):
        return body["output_text"]
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        first: Any = cast(list[Any], choices)[0]
        message: Any = cast(dict[str, Any], first).get("message") if isinstance(
            first, dict) else None
        content: Any = cast(dict[str, Any], message).get("content") if isinstance(
            message, dict) else None
        if isinstance(content, str):
            return content
    pieces: list[str] = []
    for item in _dicts(body.get("output")):
        pieces.extend(c["text"] for c in _dicts(item.get("content"))
                      if isinstance(c.get("text"), str))
    pieces.extend(c["text"] for c in _dicts(body.get("content"))
                  if isinstance(c.get("text"), str))
    return "".join(pieces) if pieces else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [cast(dict[str, Any], v) for v in cast(list[Any], value) if isinstance(v, dict)]


@op
def extract_meta(response: Any) -> dict[str, Any]:
    """A reply's metadata as a dict.

    For a ``Value`` its ``meta`` (an LLM node's: alias, model, input_tokens, output_tokens,
    cost_usd, latency_s); for a provider body (dict) its model and token usage.

    Example:
        >>> F.extract_meta(Value(ValueKind.RESPONSE, "hi", meta={"model": "m"}))
        {'model': 'm'}
    """
    if isinstance(response, Value):
        return dict(response.meta)
    if isinstance(response, Mapping):
        body = cast(Mapping[str, Any], response)
        meta: dict[str, Any] = {}
        if body.get("model") is not None:
            meta["model"] = body["model"]
        usage: Any = body.get("usage")
        if isinstance(usage, dict):
            usage_map = cast(dict[str, Any], usage)
            for ours, theirs in (("input_tokens", ("input_tokens", "prompt_tokens")),
                                 ("output_tokens", ("output_tokens", "completion_tokens"))):
                for key in theirs:
                    if key in usage_map:
                        meta[ours] = usage_map[key]
                        break
        return meta
    raise FunctionalError(
        f"F.extract_meta needs a Value or a provider reply (dict), got "
        f"{type(response).__name__}. Make the LLM node return Values with "
        "LLMInference(..., as_value=True)."
    )


@op
def with_meta(value: Any, **meta: Any) -> Value:
    """``value`` as a Value with ``meta`` added (later keys win).

    Example:
        >>> F.with_meta("hi", source="user").meta
        {'source': 'user'}
    """
    return _values.valueify(value).with_meta(**meta)


@op
def unwrap_or(value: Any, default: Any) -> Any:
    """The plain payload, or ``default`` when ``value`` is an ERROR Value.

    Example:
        >>> F.unwrap_or(Value(ValueKind.ERROR, ValueError("x")), "n/a")
        'n/a'
        >>> F.unwrap_or(Value(ValueKind.TEXT, "ok"), "n/a")
        'ok'
    """
    if isinstance(value, Value):
        return default if value.is_error else value.payload
    return value


@op
def is_error(value: Any) -> bool:
    """True for an ERROR Value (or an exception object)."""
    if isinstance(value, Value):
        return value.is_error
    return isinstance(value, BaseException)


@op
def map_values(fn: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    """``[fn(v) for v in values]``; ERROR Values pass through, Values give Values.

    ``fn`` gets plain payloads. While tracing, ``fn`` must be a module-level function (or an
    ``@op``); it runs on the real list when the row executes.

    Example:
        >>> F.map_values(str.upper, ["a", "b"])
        ['A', 'B']
    """
    items = values.payload if isinstance(values, Value) else values
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise FunctionalError(f"F.map_values needs a list, got {type(items).__name__}.")
    out: list[Any] = []
    for item in cast(Sequence[Any], items):
        if isinstance(item, Value):
            out.append(item if item.is_error else _wrap(fn(item.payload)))
        else:
            out.append(fn(item))
    return out


def _wrap(result: Any) -> Value:
    return result if isinstance(result, Value) else Value(infer_kind(result), result)


@op
def zip_values(*batches: Sequence[Any]) -> list[tuple[Any, ...]]:
    """``list(zip(*batches))``, refusing batches of different lengths.

    Example:
        >>> F.zip_values([1, 2], ["a", "b"])
        [(1, 'a'), (2, 'b')]

    Raises:
        FunctionalError: The batches differ in length (the message gives each length).
    """
    lists: list[Sequence[Any]] = []
    for i, batch in enumerate(batches):
        items = batch.payload if isinstance(batch, Value) else batch
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise FunctionalError(f"F.zip_values argument {i} is a {type(items).__name__}, "
                                  "not a list.")
        lists.append(cast(Sequence[Any], items))
    lengths = [len(b) for b in lists]
    if len(set(lengths)) > 1:
        raise FunctionalError(f"F.zip_values: batches differ in length {lengths}; zipping "
                              "would silently drop items.")
    return list(zip(*lists, strict=True))


@op
@value_aware(ValueKind.STRUCTURED)
def stack_structured(values: Any) -> list[Any]:
    """The structured payloads of ``values`` as one list (a STRUCTURED Value for Values).

    An ERROR Value among them is returned instead (errors are not stacked away).

    Example:
        >>> F.stack_structured([{"a": 1}, {"a": 2}])
        [{'a': 1}, {'a': 2}]
    """
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise FunctionalError(f"F.stack_structured needs a list, got {type(values).__name__}.")
    items = cast(Sequence[Any], values)
    for i, item in enumerate(items):
        if infer_kind(item) is not ValueKind.STRUCTURED:
            raise FunctionalError(f"F.stack_structured item {i} is a {type(item).__name__}, "
                                  "not structured (dict, list, tuple or pydantic model).")
    return list(items)
