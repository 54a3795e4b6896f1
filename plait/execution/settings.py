"""Execution settings, and how a call's settings are resolved.

Priority, highest first: keyword arguments of the call (``run(..., max_inflight=8)``), then
``module.bind(...)``, then the innermost active ``ExecutionSettings``, then the defaults.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plait.errors import ConfigError
from plait.resources.config import ResourceConfig

if TYPE_CHECKING:
    from plait.execution.shared import SharedRuntime

__all__ = [
    "ExecutionSettings",
    "ResolvedSettings",
    "current_settings",
    "get_execution_settings",
    "resolve_settings",
]

ResumeMode = Literal["auto", "force", "fresh"]


@dataclass(frozen=True)
class ResolvedSettings:
    """Every setting of one call, after priority resolution (see module docstring).

    Attributes:
        resources: Aliases -> endpoints.
        executor: "local", "ray", or an executor object.
        max_concurrent: Cap on LLM requests in flight across all endpoints (None: only the
            per-endpoint caps apply).
        max_inflight: Rows in flight at once; memory is O(this). None picks 4 x the sum of the
            endpoints' max_concurrent (at least 64).
        streaming: ``await`` on a batch returns ``BatchResult``s instead of raising.
        preserve_order: Streams yield rows in input order (else as they complete).
        on_progress: Called as ``on_progress(done, total)`` after each row.
        progress: Show a progress bar for batches (None: only when stderr is a terminal or
            in a notebook). Single-input calls never show one.
        checkpoint_dir: Where completed rows and nodes are persisted for resuming.
        resume: "auto" (resume if the pipeline and inputs match), "force", or "fresh".
        profile: Record a Chrome trace.
        profile_path: Where to write the trace (default ``plait-trace.json``).
        executor_options: Options for the executor (e.g. Ray address, rows per task).
        cache: A response-cache directory (or ``plait.cache.ResponseCache``): replies are
            stored and reused; a hit costs no request. None: no cache.
        budget_usd: Stop starting rows once spent + in-flight reservations would exceed
            this many USD (see ``plait.pricing``). None: no budget.
    """

    resources: ResourceConfig = field(default_factory=ResourceConfig)
    executor: Any = "local"
    max_concurrent: int | None = None
    max_inflight: int | None = None
    streaming: bool = False
    preserve_order: bool = False
    on_progress: Callable[[int, int | None], None] | None = None
    progress: bool | None = None
    checkpoint_dir: Path | None = None
    resume: ResumeMode = "auto"
    profile: bool = False
    profile_path: Path | None = None
    executor_options: Mapping[str, Any] = field(default_factory=dict[str, Any])
    cache: Any = None
    budget_usd: float | None = None

    def inflight_limit(self) -> int:
        """Rows to keep in flight."""
        if self.max_inflight is not None:
            return self.max_inflight
        total = batched = 0
        for cfg in self.resources.endpoints.values():
            total += getattr(cfg, "max_concurrent", None) or 64
            policy = getattr(cfg, "batch", False)
            if policy:  # a batch can only hold the calls of rows in flight
                batched = max(batched, getattr(policy, "rows_in_flight", 10_000))
        return max(64, 4 * total, batched)


_FIELDS = {f.name for f in dataclasses.fields(ResolvedSettings)}
_DEFAULTS: dict[str, Any] = {f: getattr(ResolvedSettings(), f) for f in _FIELDS}
_CURRENT: contextvars.ContextVar[ExecutionSettings | None] = contextvars.ContextVar(
    "plait_execution_settings", default=None
)


class ExecutionSettings:
    """Settings shared by every pipeline call inside ``with`` / ``async with``.

    All pipelines called inside share one resource manager: one client, one concurrency
    limit and one rate limiter per alias, closed when the block ends.

    Example:
        >>> async with ExecutionSettings(resources=config, max_inflight=256):
        ...     a = await pipeline_1(batch)
        ...     b = await pipeline_2(a)
    """

    def __init__(self, **settings: Any) -> None:
        self.check_keys(settings)
        self.values: dict[str, Any] = normalize(settings)
        self._own = dict(self.values)
        self._token: contextvars.Token[ExecutionSettings | None] | None = None
        self.shared: SharedRuntime | None = None
        self._borrowed = False

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not real attributes: the settings themselves.
        if name in _FIELDS:
            values = self.__dict__.get("values", {})
            if name in values:
                return values[name]
            return _DEFAULTS[name]
        raise AttributeError(
            f"ExecutionSettings has no attribute {name!r}. Settings: {sorted(_FIELDS)}."
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.values.items()))
        state = " (active)" if self._token is not None else ""
        return f"ExecutionSettings({shown}){state}"

    @staticmethod
    def check_keys(settings: Mapping[str, Any]) -> None:
        """Raise ConfigError naming unknown setting names and listing the valid ones."""
        unknown = sorted(set(settings) - _FIELDS)
        if unknown:
            raise ConfigError(f"Unknown execution setting(s) {unknown}. Valid: {sorted(_FIELDS)}.")

    async def __aenter__(self) -> ExecutionSettings:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self._exit()
        if self.shared is not None:
            shared, self.shared = self.shared, None
            if not self._borrowed:
                await shared.aclose()

    def __enter__(self) -> ExecutionSettings:
        from plait.execution.shared import SharedRuntime

        if self._token is not None:
            raise ConfigError("This ExecutionSettings is already active; create a new one.")
        # A nested block refines the enclosing one: settings it does not set are inherited,
        # and without its own resources it shares the outer block's resource manager, so each
        # endpoint keeps a single limiter.
        parent = _CURRENT.get()
        self.values = {**(parent.values if parent is not None else {}), **self._own}
        self._borrowed = (parent is not None and parent.shared is not None
                          and "resources" not in self._own)
        self.shared = parent.shared if parent is not None and self._borrowed else (
            SharedRuntime(self))
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit()
        if self.shared is not None:
            shared, self.shared = self.shared, None
            if not self._borrowed:
                shared.close_sync()

    def _exit(self) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        self.values = dict(self._own)


def current_settings() -> ExecutionSettings | None:
    """The innermost active ExecutionSettings, if any."""
    return _CURRENT.get()


def get_execution_settings() -> ExecutionSettings | None:
    """The innermost active ``ExecutionSettings`` (None outside any ``with`` block).

    Example:
        >>> with ExecutionSettings(max_inflight=8):
        ...     get_execution_settings().max_inflight
        8
    """
    return _CURRENT.get()


def _short(value: Any) -> str:
    if isinstance(value, ResourceConfig):
        return f"ResourceConfig(aliases={sorted(value.endpoints)})"
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    return repr(value)


def normalize(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce and check setting values (paths, resources, limits)."""
    out = dict(settings)
    res = out.get("resources")
    if isinstance(res, str | Path):
        out["resources"] = ResourceConfig.from_yaml(res)
    elif isinstance(res, Mapping):
        out["resources"] = ResourceConfig.from_dict(res)  # pyright: ignore[reportUnknownArgumentType]
    elif res is not None and not isinstance(res, ResourceConfig):
        raise ConfigError(
            f"resources must be a ResourceConfig, a dict or a YAML path, got {type(res).__name__}."
        )
    for key in ("checkpoint_dir", "profile_path"):
        if out.get(key) is not None:
            out[key] = Path(out[key])
    for key in ("max_concurrent", "max_inflight"):
        value = out.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {value!r}. Use None for "
                              "the default.")
    if out.get("cache") is not None:
        from plait.cache import as_cache

        out["cache"] = as_cache(out["cache"])
    if out.get("budget_usd") is not None:
        from plait.pricing import Budget

        Budget(out["budget_usd"])  # checks the value, naming it
    if out.get("resume", "auto") not in ("auto", "force", "fresh"):
        raise ConfigError(f"resume must be 'auto', 'force' or 'fresh', got {out['resume']!r}.")
    return out


def resolve_settings(
    call_kwargs: Mapping[str, Any], bound: Mapping[str, Any] | None
) -> tuple[ResolvedSettings, ExecutionSettings | None]:
    """Merge call kwargs > bind > ExecutionSettings > defaults."""
    ctx = current_settings()
    merged: dict[str, Any] = {}
    if ctx is not None:
        merged.update(ctx.values)
    if bound:
        merged.update(normalize(bound))
    merged.update(normalize(call_kwargs))
    if merged.get("profile_path") is not None and "profile" not in merged:
        merged["profile"] = True
    resolved = ResolvedSettings(**merged)
    check_output_paths(resolved)
    return resolved, ctx


def check_output_paths(settings: ResolvedSettings) -> None:
    """Refuse output paths that cannot be written, before the first (paid) request.

    A trace or checkpoint that fails to be written after the run would lose what was paid for.

    Raises:
        ConfigError: ``checkpoint_dir`` is a file, or ``profile_path`` is a directory or lies
            in a directory that does not exist or cannot be written.
    """
    ckpt = settings.checkpoint_dir
    if ckpt is not None and ckpt.exists() and not ckpt.is_dir():
        raise ConfigError(
            f"checkpoint_dir {ckpt} is a file, not a directory. Pass a directory path (it is "
            f"created if missing), e.g. checkpoint_dir='{ckpt}.ckpt', or move the file away."
        )
    path = settings.profile_path
    if path is None or not settings.profile:
        return
    if path.is_dir():
        raise ConfigError(
            f"profile_path {path} is a directory. Pass a file path for the Chrome trace, e.g. "
            f"profile_path='{path / 'trace.json'}'."
        )
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(
            f"profile_path {path}: its directory {parent} does not exist, so the trace could "
            "not be written after the run. Create the directory first, or choose another "
            "profile_path."
        )
    if not os.access(parent, os.W_OK):
        raise ConfigError(
            f"profile_path {path}: its directory {parent} is not writable by this process. "
            "Choose another profile_path."
        )
