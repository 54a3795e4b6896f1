"""Keys for Ray workers from a file they read themselves, so values never enter Ray's logs.

Variables passed as ``runtime_env={"env_vars": ...}`` (``--env``) are written in plain text
to Ray's ``runtime_env_agent`` logs and shown by the Jobs API and dashboard. With
``env_file`` only the *path* travels: each worker reads ``NAME=VALUE`` lines from it at start
(a file on shared storage, or a Kubernetes secret mounted at the same path on every node).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from plait.errors import ConfigError

__all__ = ["load_env_file", "parse_env_file"]


def parse_env_file(text: str, path: str) -> dict[str, str]:
    """``NAME=VALUE`` lines (``#`` comments, blank lines and ``export`` allowed) -> dict.

    Raises:
        ConfigError: A line is not ``NAME=VALUE`` (its number is named, never its value).
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigError(f"env_file {path}, line {number}: expected NAME=VALUE.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[name] = value
    return env


def load_env_file(path: str) -> list[str]:
    """Set this process's environment from ``path``; return the names set.

    Raises:
        ConfigError: The file cannot be read here (the message names this node) or is
            malformed.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"env_file {path} cannot be read on the Ray worker on node {socket.gethostname()} "
            f"({exc.strerror}). Every worker reads it itself: put it on storage all nodes "
            "share, or mount the secret at that path on every node."
        ) from exc
    env = parse_env_file(text, path)
    os.environ.update(env)
    return sorted(env)
