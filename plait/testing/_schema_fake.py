"""Deterministic JSON values that validate against a JSON schema.

Covers what pydantic emits for response models: objects, ``$defs`` + ``$ref``, ``anyOf``
(``Optional``), ``allOf``, ``enum``/``const`` (``Literal``, ``Enum``), strings with length
and common formats, bounded numbers, arrays with item counts. Strings carry a short excerpt
of the user message so a test can see which input produced which output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

__all__ = ["fake_json"]

_MAX_DEPTH = 8  # recursive models (a tree of nodes) stop growing here
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "duration": "P1D",
}


def fake_json(schema: Mapping[str, Any], *, seed_text: str = "") -> Any:
    """Return a deterministic value that validates against ``schema``.

    Args:
        schema: A JSON schema (draft 2020-12 subset, as pydantic emits it).
        seed_text: Text to embed in generated strings (e.g. the user message).

    Returns:
        A JSON-serializable value; the same inputs always give the same value.
    """
    return _Faker(schema, seed_text[:40]).value(schema, "value", 0)


class _Faker:
    def __init__(self, root: Mapping[str, Any], seed_text: str) -> None:
        self._root = root
        self._seed = seed_text

    def value(self, schema: Mapping[str, Any], name: str, depth: int) -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self._pick_option(schema[key], depth), name, depth)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self._resolve(part))
            return self.value(merged, name, depth)
        kind: Any = schema.get("type")
        if isinstance(kind, list):
            non_null = [k for k in cast("list[str]", kind) if k != "null"]
            if not non_null or depth >= _MAX_DEPTH:
                return None
            kind = non_null[0]
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        maker = getattr(self, f"_make_{kind}", None)
        if maker is None:
            return None
        return maker(schema, name, depth)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref: str = schema["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"Only local $ref values are supported, got {ref!r}.")
            node: Any = self._root
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **extra}
            seen += 1
        return schema

    def _pick_option(self, options: list[Any], depth: int) -> Mapping[str, Any]:
        # Prefer a real value; past the depth limit prefer null so recursion ends.
        resolved = [self._resolve(o) for o in options]
        nulls = [o for o in resolved if o.get("type") == "null"]
        others = [o for o in resolved if o.get("type") != "null"]
        if depth >= _MAX_DEPTH and nulls:
            return nulls[0]
        return (others or nulls)[0]

    def _make_null(self, schema: Mapping[str, Any], name: str, depth: int) -> None:
        return None

    def _make_boolean(self, schema: Mapping[str, Any], name: str, depth: int) -> bool:
        return True

    def _make_object(self, schema: Mapping[str, Any], name: str, depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required: set[str] = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if depth >= _MAX_DEPTH and key not in required:
                continue
            out[key] = self.value(sub, key, depth + 1)
        return out

    def _make_array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        count = max(low, 0 if depth >= _MAX_DEPTH else 1)
        if high is not None:
            count = min(count, int(high))
        prefix: list[Any] = schema.get("prefixItems") or []
        items: Mapping[str, Any] = schema.get("items") or {}
        out: list[Any] = [self.value(p, name, depth + 1) for p in prefix]
        while len(out) < count:
            out.append(self.value(items, name, depth + 1))
        if schema.get("uniqueItems") and len(out) > 1:
            out = self._make_unique(out)
        return out

    @staticmethod
    def _make_unique(values: list[Any]) -> list[Any]:
        unique: list[Any] = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                v = f"{v}{i}" if i else v
            elif isinstance(v, int | float) and not isinstance(v, bool):
                v = v + i
            unique.append(v)
        return unique

    def _make_string(self, schema: Mapping[str, Any], name: str, depth: int) -> str:
        fmt: str | None = schema.get("format")
        text = _FORMATS.get(fmt, "x") if fmt else f"{name}: {self._seed}".rstrip(": ")
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        if len(text) < low:
            text = text + "x" * (low - len(text))
        if high is not None:
            text = text[: int(high)]
        return text

    def _make_integer(self, schema: Mapping[str, Any], name: str, depth: int) -> int:
        low, high = _bounds(schema, step=1)
        value = 1
        if low is not None:
            value = max(value, math.ceil(low))
        if high is not None:
            value = min(value, math.floor(high))
        multiple = schema.get("multipleOf")
        if multiple:
            value = math.ceil(value / multiple) * int(multiple)
        return value

    def _make_number(self, schema: Mapping[str, Any], name: str, depth: int) -> float:
        low, high = _bounds(schema, step=1e-6)
        value = 0.5
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        multiple = schema.get("multipleOf")
        if multiple:
            value = math.ceil(value / multiple) * float(multiple)
        return float(value)


def _bounds(schema: Mapping[str, Any], *, step: float) -> tuple[float | None, float | None]:
    low: float | None = schema.get("minimum")
    high: float | None = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + step
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - step
    return low, high
