"""Ray token authentication, as seen from outside the cluster.

Ray 2.60 protects its gRPC services and the dashboard HTTP server (which hosts the Jobs API)
with a shared bearer token when ``RAY_AUTH_MODE=token``. Processes that run *inside* the
cluster inherit what they need from the node that started them; this module is for the
processes that do not: a driver started by hand, a ``JobSubmissionClient``, an HTTP probe.

Ray looks for the token in this order (the same order :func:`find_auth_token` uses):

1. ``RAY_AUTH_TOKEN``: the token itself.
2. ``RAY_AUTH_TOKEN_PATH``: a file that holds it.
3. ``~/.ray/auth_token``: written by ``ray get-auth-token --generate`` and by ``ray.init()``
   when it starts a new local cluster.

This module never imports ``ray``: it only reads the environment and files, so it stays cheap
and usable in a process that must not start Ray.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from plait.errors import ConfigError

__all__ = [
    "AUTH_MODE_ENV",
    "AUTH_TOKEN_ENV",
    "AUTH_TOKEN_PATH_ENV",
    "auth_headers",
    "default_token_path",
    "find_auth_token",
    "ray_auth_env",
]

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def default_token_path(home: Path | None = None) -> Path:
    """The file Ray reads when neither token variable is set: ``~/.ray/auth_token``."""
    return (home if home is not None else Path.home()) / ".ray" / "auth_token"


def _mode(environ: Mapping[str, str]) -> str | None:
    value = environ.get(AUTH_MODE_ENV)
    return value.strip().lower() if value else None


def _token_source(
    environ: Mapping[str, str], home: Path | None
) -> tuple[str, str] | None:
    """Return ``(env var to forward, its value)`` for the first token source Ray would use."""
    token = environ.get(AUTH_TOKEN_ENV, "").strip()
    if token:
        return AUTH_TOKEN_ENV, token
    path_value = environ.get(AUTH_TOKEN_PATH_ENV)
    if path_value:
        path = Path(path_value).expanduser()
        if not _read_token(path):
            # Ray fails hard on a bad RAY_AUTH_TOKEN_PATH rather than falling back; so do we,
            # so the mistake shows up here and not as a 401 from the cluster.
            raise ConfigError(
                f"{AUTH_TOKEN_PATH_ENV}={path_value} does not name a readable, non-empty "
                "token file. Point it at the file holding the cluster's token (on the head "
                "node: `ray get-auth-token`), or unset it."
            )
        return AUTH_TOKEN_PATH_ENV, str(path)
    path = default_token_path(home)
    if _read_token(path):
        return AUTH_TOKEN_PATH_ENV, str(path)
    return None


def _missing_token_error(home: Path | None) -> ConfigError:
    return ConfigError(
        f"{AUTH_MODE_ENV}=token but no Ray auth token was found. Set {AUTH_TOKEN_ENV}, "
        f"point {AUTH_TOKEN_PATH_ENV} at a file holding it, or copy it to "
        f"{default_token_path(home)} (print it on the head node with `ray get-auth-token`)."
    )


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def find_auth_token(
    environ: Mapping[str, str] | None = None, *, home: Path | None = None
) -> str | None:
    """Find the Ray auth token the way Ray does, or None when there is none.

    Args:
        environ: Environment to read; defaults to ``os.environ``.
        home: Home directory for ``~/.ray/auth_token``; defaults to the user's home.

    Returns:
        The token, or None if ``RAY_AUTH_MODE=disabled`` or no source holds a token.

    Raises:
        ConfigError: ``RAY_AUTH_TOKEN_PATH`` is set but the file is missing or empty.
    """
    env = os.environ if environ is None else environ
    if _mode(env) == "disabled":
        return None
    source = _token_source(env, home)
    if source is None:
        return None
    name, value = source
    return value if name == AUTH_TOKEN_ENV else _read_token(Path(value))


def ray_auth_env(
    environ: Mapping[str, str] | None = None, *, home: Path | None = None
) -> dict[str, str]:
    """Environment variables a separate driver or Jobs client needs to reach the cluster.

    Merge the result into a subprocess environment (``env={**os.environ, **ray_auth_env()}``).
    A token file is forwarded by path (``RAY_AUTH_TOKEN_PATH``) rather than by value, so the
    secret does not get copied into more environments than necessary.

    Args:
        environ: Environment to read; defaults to ``os.environ``.
        home: Home directory for ``~/.ray/auth_token``; defaults to the user's home.

    Returns:
        ``{}`` when no token is configured (a cluster without token auth);
        ``{"RAY_AUTH_MODE": "disabled"}`` when auth was explicitly disabled; otherwise
        ``RAY_AUTH_MODE=token`` plus ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``.

    Raises:
        ConfigError: ``RAY_AUTH_MODE=token`` but no token can be found, or
            ``RAY_AUTH_TOKEN_PATH`` names a missing or empty file.
    """
    env = os.environ if environ is None else environ
    mode = _mode(env)
    if mode == "disabled":
        return {AUTH_MODE_ENV: "disabled"}
    source = _token_source(env, home)
    if source is None:
        if mode == "token":
            raise _missing_token_error(home)
        return {}
    name, value = source
    # A token on disk with the mode unset is how `ray start --head` decides to enable auth;
    # a client must opt in explicitly, because an explicit address never auto-enables it.
    return {AUTH_MODE_ENV: "token", name: value}


def auth_headers(
    environ: Mapping[str, str] | None = None, *, home: Path | None = None
) -> dict[str, str]:
    """HTTP headers for the dashboard / Jobs API when a Ray auth token is available.

    Sending the header to a cluster without token auth is harmless (it is ignored), so the
    header is added whenever a token is found. Ray also accepts ``X-Ray-Authorization`` (for
    proxies that consume ``Authorization`` themselves) and a ``ray-authentication-token``
    cookie; the standard header is what its own SDK sends.

    Args:
        environ: Environment to read; defaults to ``os.environ``.
        home: Home directory for ``~/.ray/auth_token``; defaults to the user's home.

    Returns:
        ``{"Authorization": "Bearer <token>"}``, or ``{}`` when there is no token.

    Raises:
        ConfigError: ``RAY_AUTH_MODE=token`` but no token can be found.
    """
    env = os.environ if environ is None else environ
    token = find_auth_token(env, home=home)
    if token is None:
        if _mode(env) == "token":
            raise _missing_token_error(home)
        return {}
    return {"Authorization": f"Bearer {token}"}
