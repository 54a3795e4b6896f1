"""Connecting to Ray, or starting a local Ray for the user.

Resolution, first match wins:

1. Ray is already initialized in this process (the user called ``ray.init(...)``): use it;
   an ``address`` option is then ignored.
2. ``executor_options={"address": "ray://head:10001"}`` (or ``"auto"``, or ``"host:6379"``):
   ``ray.init(address=...)`` connects to that cluster.
3. Otherwise ``ray.init()``: Ray connects to the cluster named by ``RAY_ADDRESS`` or the most
   recent ``ray start`` on this machine, and else starts a local Ray for this process (shut
   down when the process exits).

Worker processes inherit the driver's environment only on a local Ray; on a remote cluster
set the provider keys there (or pass ``runtime_env={"env_vars": {...}}``), since endpoint
keys are never pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from plait.errors import ConfigError, PlaitError

__all__ = ["RayConnectionError", "ensure_ray", "ray_api", "ray_session_key"]

ray_api: Any = ray
"""``ray`` itself, typed loosely: its stubs leave parts Unknown, which pyright strict rejects."""


class RayConnectionError(PlaitError):
    """Ray could not be started or reached."""


_INIT_KEYS = ("address", "namespace", "runtime_env", "num_cpus")


def ensure_ray(options: Mapping[str, Any]) -> None:
    """Make sure this process is connected to Ray (see the module docstring).

    Args:
        options: ``executor_options``; ``address``, ``namespace``, ``runtime_env`` and
            ``num_cpus`` are passed to ``ray.init`` when plait initializes Ray.

    Raises:
        RayConnectionError: The cluster at ``address`` cannot be reached.
    """
    if ray.is_initialized():
        return
    kwargs = {key: options[key] for key in _INIT_KEYS if options.get(key) is not None}
    try:
        ray_api.init(**kwargs)
    except (ConnectionError, TimeoutError) as exc:
        where = kwargs.get("address", "the default address")
        raise RayConnectionError(
            f"Cannot connect to Ray at {where!r}: {exc}. Start the cluster (`ray start "
            "--head`), fix executor_options={'address': ...}, or leave the address out to "
            "start a local Ray."
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid Ray options {sorted(kwargs)} in executor_options: {exc}"
                          ) from exc


def ray_session_key() -> str:
    """Identifies the connected Ray session (state kept per session must not outlive it).

    Job ids restart at ``01000000`` in every new local Ray, so the GCS address is part of it.
    """
    context = ray_api.get_runtime_context()
    return f"{context.gcs_address}/{context.get_job_id()}"
