"""Field checks of ``EndpointConfig``: each mistake is refused with the culprit and the fix.

A wrong type or a malformed URL or key would otherwise surface much later and far away: a
``TypeError`` deep in the pool, six retries of an unroutable URL, or aiohttp's "header
injection" error on the first request. Messages never quote an API key, only where in it
the problem is.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from plait.errors import ConfigError

__all__ = [
    "check_base_url",
    "check_key_text",
    "check_number",
    "check_optional_str",
]


def check_number(
    name: str, value: object, *, integer: bool = False, minimum: float = 0.0,
    strict: bool = False, optional: bool = False, hint: str = "",
) -> None:
    """Refuse a value that is not a finite number in range.

    Args:
        name: The field, for the message.
        value: The value given.
        integer: Only whole numbers are valid.
        minimum: The lowest valid value.
        strict: The value must be greater than ``minimum`` (not equal).
        optional: None is valid.
        hint: Appended to the range message (what to write instead).

    Raises:
        ConfigError: Names the field, the value and its type, and the fix.
    """
    if value is None and optional:
        return
    kind = "a whole number" if integer else "a number"
    valid_types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, valid_types):
        fix = ""
        if isinstance(value, str):
            fix = f" Write {name}={value.strip()}, not {name}={value!r} (a string)."
        none = " or None" if optional else ""
        raise ConfigError(
            f"{name} must be {kind}{none}, got {value!r} ({type(value).__name__}).{fix}"
        )
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ConfigError(f"{name} must be finite, got {value!r}. {hint}".rstrip())
    too_low = number <= minimum if strict else number < minimum
    if too_low:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}. {hint}".rstrip())


def check_optional_str(name: str, value: object) -> None:
    """Refuse a value that is neither None nor a string."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string or None, got {type(value).__name__}.")


def check_base_url(value: str) -> None:
    """Refuse a base URL that no HTTP client can call (no scheme, no host, whitespace).

    Raises:
        ConfigError: Names the URL and suggests the corrected one.
    """
    stripped = value.strip()
    if stripped != value:
        raise ConfigError(
            f"base_url {value!r} has leading or trailing whitespace. Use "
            f"base_url={stripped!r}."
        )
    parts = urlsplit(value)
    if "://" not in value:
        raise ConfigError(
            f"base_url {value!r} has no scheme, so it cannot be called (it would be retried "
            f"as a connection error). Use base_url='https://{value}' (or 'http://' for a "
            "local server)."
        )
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"base_url {value!r} has scheme {parts.scheme!r}; only 'http' and 'https' are "
            "supported."
        )
    if not parts.netloc:
        raise ConfigError(
            f"base_url {value!r} has no host. Write it as 'https://host[:port]/path'."
        )


def check_key_text(key: str, source: str) -> None:
    """Refuse a key that cannot go into an HTTP header (trailing newline, spaces, non-ASCII).

    The key itself is never quoted; the message says where the bad character is.

    Args:
        key: The key.
        source: Where the key came from, e.g. "api_key" or "environment variable X".

    Raises:
        ConfigError: Names the source, the position and kind of the character, and the fix.
    """
    for position, char in enumerate(key):
        if 0x21 <= ord(char) <= 0x7E:
            continue
        if char in "\r\n":
            kind = "a newline"
        elif char.isspace():
            kind = "whitespace"
        elif ord(char) > 0x7E:
            kind = "a non-ASCII character"
        else:
            kind = "a control character"
        where = ("at its end" if position >= len(key.rstrip())
                 else "at its start" if position < len(key) - len(key.lstrip())
                 else f"at position {position}")
        raise ConfigError(
            f"The API key from {source} contains {kind} {where} (character {position + 1} "
            f"of {len(key)}), which cannot be sent in an HTTP header. Keys read from a file "
            "usually carry a trailing newline: strip it (key.strip()), or fix the "
            "variable's value."
        )
