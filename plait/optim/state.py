"""Saving and loading learned prompts as JSON (never pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

from plait.errors import ConfigError
from plait.module import Module

__all__ = ["load_state", "save_state"]

_FORMAT = "plait.state/1"


def save_state(module: Module, path: str | os.PathLike[str]) -> Path:
    """Write ``module.state_dict()`` to ``path`` as JSON; returns the path.

    Example:
        >>> save_state(pipeline, "prompts.json")
    """
    target = Path(path)
    payload = {"format": _FORMAT, "module": type(module).__name__,
               "parameters": module.state_dict()}
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(target)  # atomic: a crash never leaves half a file
    return target


def load_state(module: Module, path: str | os.PathLike[str], strict: bool = True) -> None:
    """Load Parameter values written by ``save_state`` into ``module``.

    Raises:
        ConfigError: The file is missing, not a plait state file, or (with ``strict``) does
            not match the module's Parameters.
    """
    source = Path(path)
    try:
        payload = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"No state file at {source}. Write one with save_state().") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON ({exc}); it was not written by "
                          "save_state().") from exc
    data = cast("dict[str, Any]", payload) if isinstance(payload, dict) else {}
    params = data.get("parameters")
    if data.get("format") != _FORMAT or not isinstance(params, dict):
        raise ConfigError(f"{source} is not a plait state file (expected format {_FORMAT!r}). "
                          "Write it with plait.optim.save_state().")
    module.load_state_dict(cast("dict[str, str]", params), strict=strict)
