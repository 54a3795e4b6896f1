r"""How traced values are spelled inside strings while forward() is traced.

Formatting a traced value (``f"{doc}"``, ``str(doc)``, ``"%s" % doc``) must return a ``str``,
so the tracer returns a *placeholder*: ``open + index + close``, where ``open`` carries a random
per-trace nonce. Wherever a string reaches a module call or the output, the tracer splits it at
its own placeholders into a ``format`` node.

forward() is traced twice with two very different encodings (see ``Tracer.trace``):

- ``compact``: short, lowercase letters and digits;
- ``wide``: surrounded by whitespace, letters of both cases, every printable ASCII character
  and a few non-ASCII letters, and ``WIDE_LENGTH`` characters long.

Code that only moves a placeholder around (f-strings, ``+``, ``%``, ``str.join``) builds the
same graph with both. Code that looks *into* the text (slicing, ``.upper()``, ``.strip()``,
``.split(",")``, ``json.dumps``, ``repr``, ``len`` in a condition) sees two different texts and
builds two different graphs, which the tracer refuses. The limit: a slice or length test that
only reaches past the first ``WIDE_LENGTH`` characters of such a string cannot be told apart.

Only strings built while tracing are ever split, never real inputs or replies at run time, so
real text containing the same private-use characters (icon fonts, PDF extraction) is just text.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "SENTINEL_CHARS",
    "SENTINEL_CLOSE",
    "SENTINEL_OPEN",
    "WIDE_LENGTH",
    "Encoding",
    "compact",
    "looks_like_placeholder",
    "wide",
]

SENTINEL_OPEN = "\ue000"
SENTINEL_CLOSE = "\ue001"
# Every placeholder contains these; a string without them holds no traced value.
SENTINEL_CHARS = frozenset(SENTINEL_OPEN + SENTINEL_CLOSE)

WIDE_LENGTH = 1 << 16
_WIDE_SIGNATURE = "~wide~plait~"
_WIDE_ALPHABET = string.printable + "ßéÅøÆ"
_WIDE_PADDING = (_WIDE_SIGNATURE + _WIDE_ALPHABET * (WIDE_LENGTH // len(_WIDE_ALPHABET) + 1))[
    :WIDE_LENGTH
]
_DIGITS = re.compile(r"[0-9]+")
# The shape of a compact placeholder of any trace (to recognise one kept from an earlier
# trace, or one whose letters were changed, e.g. by .upper()).
_COMPACT_SHAPE = re.compile(f"{SENTINEL_OPEN}[a-zA-Z]{{12}}[0-9]+{SENTINEL_CLOSE}")


@dataclass(frozen=True, slots=True)
class Encoding:
    """One trace's placeholder spelling: ``prefix + str(index + offset) + suffix``.

    Attributes:
        name: "compact" or "wide" (for messages).
        prefix: Text before the number; holds the trace's random nonce.
        suffix: Text after the number.
        offset: Added to the index, so the two traces also spell the numbers differently.
        nonce: The random part of ``prefix``.
    """

    name: str
    prefix: str
    suffix: str
    offset: int
    nonce: str

    def placeholder(self, index: int) -> str:
        """The text standing for sentinel number ``index`` of this trace."""
        return f"{self.prefix}{index + self.offset}{self.suffix}"

    def split(self, text: str) -> list[str | int]:
        """``text`` as literal parts and sentinel numbers (only this trace's placeholders)."""
        parts: list[str | int] = []
        pos = 0
        search = 0
        prefix, suffix = self.prefix, self.suffix
        while True:
            start = text.find(prefix, search)
            if start < 0:
                break
            digits = _DIGITS.match(text, start + len(prefix))
            if digits is None or not text.startswith(suffix, digits.end()):
                search = start + 1  # a damaged placeholder stays literal; see leaked()
                continue
            if start > pos:
                parts.append(text[pos:start])
            parts.append(int(digits.group()) - self.offset)
            pos = search = digits.end() + len(suffix)
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    def leaked(self, literal: str) -> bool:
        """Whether literal text holds a placeholder that was changed or escaped.

        True for this trace's nonce in any letter case (``json.dumps``/``repr`` escape the
        markers but keep the nonce), a compact placeholder of any trace (kept from an earlier
        trace), or the wide padding.
        """
        folded = literal.casefold()
        return (
            self.nonce.casefold() in folded
            or _COMPACT_SHAPE.search(literal) is not None
            or _WIDE_SIGNATURE in literal
        )

    def holds(self, value: Any) -> bool:
        """Whether a nested structure of strings, lists and dicts holds a placeholder."""
        if isinstance(value, str):
            text = str.__str__(value)  # a plain copy: TracedText traps some str methods
            return str.find(text, self.prefix) >= 0 or self.leaked(text)
        if isinstance(value, list | tuple):
            return any(self.holds(v) for v in cast("list[Any]", value))
        if isinstance(value, dict):
            return any(self.holds(v) for v in cast("dict[Any, Any]", value).values())
        return False


def compact() -> Encoding:
    """The short encoding: lowercase nonce letters and digits between the markers."""
    nonce = "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))
    return Encoding("compact", SENTINEL_OPEN + nonce, SENTINEL_CLOSE,
                    secrets.randbelow(1000), nonce)


def wide() -> Encoding:
    """The long encoding: whitespace around, mixed case, punctuation, ``WIDE_LENGTH`` chars."""
    # Upper and lower case both present, so .upper() and .lower() both change it.
    nonce = "".join(secrets.choice(string.ascii_uppercase) for _ in range(6)) + "".join(
        secrets.choice(string.ascii_lowercase) for _ in range(6)
    )
    return Encoding(
        "wide",
        f" \n\t{SENTINEL_OPEN}{nonce}",
        f"{_WIDE_PADDING}{SENTINEL_CLOSE}\t\n ",
        1000 + secrets.randbelow(1000),
        nonce,
    )


def looks_like_placeholder(text: str) -> bool:
    """Whether ``text`` holds something shaped like a placeholder of any trace."""
    return _COMPACT_SHAPE.search(text) is not None or _WIDE_SIGNATURE in text
