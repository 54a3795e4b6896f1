"""Connecting to Ray, or starting a local Ray for the user.

Resolution, first match wins:

1. Ray is already initialized in this process (the user called ``ray.init(...)``): use it;
   an ``address`` option is then ignored.
2. ``executor_options={"address": "ray://head:10001"}`` (or ``"auto"``, or ``"host:6379"``):
   ``ray.init(address=...)`` connects to that cluster.
3. Otherwise ``ray.init()``: Ray connects to the cluster named by ``RAY_ADDRESS`` or the most
   recent ``ray start`` on this machine, and else starts a local Ray for this process (shut
   down when the process exits).

Before joining an existing cluster (2 and 3) its GCS is probed with one bounded gRPC call,
because ``ray.init`` itself waits long and vaguely: 400 s on an address nothing listens on,
and 20 s of ``InvalidAuthToken`` log lines on a cluster with Ray 2.60 token auth when this
process has no token. The probe turns both into a :class:`RayConnectionError` saying what to
do, and switches token auth on (``RAY_AUTH_MODE=token``) for this process when the cluster
asks for it and a token is found (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``, see :mod:`plait_ray.auth`).

Worker processes inherit the driver's environment only on a local Ray; on a remote cluster
set the provider keys there (or pass ``runtime_env={"env_vars": {...}}``), since endpoint
keys are never pickled.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import grpc
import ray

from plait.errors import ConfigError, PlaitError
from plait_ray.auth import AUTH_MODE_ENV, find_auth_token, ray_auth_env

__all__ = ["RayConnectionError", "ensure_ray", "probe_cluster", "ray_api", "ray_session_key"]

ray_api: Any = ray
"""``ray`` itself, typed loosely: its stubs leave parts Unknown, which pyright strict rejects."""

PROBE_TIMEOUT_S = 5.0
"""Longest wait for the cluster's GCS to answer the probe."""


class RayConnectionError(PlaitError):
    """Ray could not be started or reached."""


_INIT_KEYS = ("address", "namespace", "runtime_env", "num_cpus")
# Any GCS method answers an unauthenticated call with UNAUTHENTICATED; this one is cheap.
_PROBE_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"


def ensure_ray(options: Mapping[str, Any]) -> None:
    """Make sure this process is connected to Ray (see the module docstring).

    Args:
        options: ``executor_options``; ``address``, ``namespace``, ``runtime_env`` and
            ``num_cpus`` are passed to ``ray.init`` when plait initializes Ray.

    Raises:
        RayConnectionError: The cluster cannot be reached within ``PROBE_TIMEOUT_S``, or it
            uses token auth and this process has no (valid) token.
    """
    if ray.is_initialized():
        return
    kwargs = {key: options[key] for key in _INIT_KEYS if options.get(key) is not None}
    where = kwargs.get("address")
    gcs = _gcs_address(where)
    if gcs is not None:
        probe_cluster(gcs, label=where or gcs)
    try:
        ray_api.init(**kwargs)
    except (ConnectionError, TimeoutError) as exc:
        raise RayConnectionError(
            f"Cannot connect to Ray at {where or 'the default address'!r}: {exc}. Check that "
            "the cluster is up (`ray status`), fix --address / executor_options={'address': "
            "...}, or leave the address out to start a local Ray."
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid Ray options {sorted(kwargs)} in executor_options: {exc}"
                          ) from exc


def _gcs_address(address: str | None) -> str | None:
    """The ``host:port`` of the existing cluster ``ray.init(address)`` would join, or None."""
    named = address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS")
    if named and (named == "local" or "://" in named):
        return None  # a new local Ray, or Ray Client (which does its own handshake)
    services: Any = importlib.import_module("ray._private.services")
    try:
        resolved: str | None = services.canonicalize_bootstrap_address(address)
    except ConnectionError as exc:  # "auto" with no cluster running on this machine
        raise RayConnectionError(
            f"No running Ray cluster was found for address {address!r}: {exc}. Start one "
            "(`ray start --head`), pass its address (host:6379), or leave the address out "
            "to start a local Ray."
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"Ray address {address!r} is malformed: {exc}. Use host:port "
                          "(e.g. 10.0.0.5:6379), auto, local or ray://host:10001.") from exc
    return resolved


def probe_cluster(gcs: str, *, label: str | None = None,
                  timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Check that the GCS at ``gcs`` answers and accepts this process; enable token auth.

    Args:
        gcs: The cluster's GCS ``host:port``.
        label: How the user named the address (for messages).
        timeout_s: Longest wait for an answer.

    Raises:
        RayConnectionError: Nothing answers, or the cluster wants a token this process lacks
            (or has wrong).
    """
    label = label or gcs
    token = find_auth_token()
    if _call(gcs, None, timeout_s) != grpc.StatusCode.UNAUTHENTICATED:
        return  # no token auth on this cluster (or it answered otherwise: ray.init decides)
    if token is None:
        raise RayConnectionError(
            f"The Ray cluster at {label} uses token authentication and this process has no "
            f"token. On the head node run `ray get-auth-token`, then here set RAY_AUTH_TOKEN "
            "to it (or RAY_AUTH_TOKEN_PATH to a file holding it, or save it as "
            "~/.ray/auth_token), and run again."
        )
    if _call(gcs, token, timeout_s) == grpc.StatusCode.UNAUTHENTICATED:
        raise RayConnectionError(
            f"The Ray cluster at {label} rejected this process's auth token (from "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). Copy the current "
            "token from the head node (`ray get-auth-token`) and run again."
        )
    if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        # ray.init reads the mode from the environment only; an explicit address never
        # switches it on by itself, so without this it would retry unauthenticated for 20 s.
        os.environ.update(ray_auth_env())
        os.environ[AUTH_MODE_ENV] = "token"
        raylet: Any = importlib.import_module("ray._raylet")
        raylet.Config.initialize("")  # Ray caches its config: re-read the mode
        raylet.AuthenticationTokenLoader.instance().reset_cache()


def _call(gcs: str, token: str | None, timeout_s: float) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    channel: Any = grpc.insecure_channel(gcs)
    try:
        method: Any = channel.unary_unary(_PROBE_METHOD)
        method(b"", timeout=timeout_s, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # pyright: ignore[reportAttributeAccessIssue]
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise RayConnectionError(
                f"Nothing answered as a Ray cluster at {gcs} within {timeout_s:g} s "
                f"({code.name}). Check the address and port (the head's GCS port, 6379 by "
                "default; `ray status` on the head prints it), that the head is up, and that "
                "no firewall blocks it; or leave the address out to start a local Ray."
            ) from exc
        return code
    finally:
        channel.close()


def ray_session_key() -> str:
    """Identifies the connected Ray session (state kept per session must not outlive it).

    Job ids restart at ``01000000`` in every new local Ray, so the GCS address is part of it.
    """
    context = ray_api.get_runtime_context()
    return f"{context.gcs_address}/{context.get_job_id()}"
