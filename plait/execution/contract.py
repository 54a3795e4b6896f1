"""The one contract between a traced graph and whatever runs it.

An executor receives a ``Job`` (module, graph, rows, settings) and yields one ``RowResult``
per row, in any order, as rows finish. It never raises for a row's failure: the failure is the
row's ``error``. It raises only when the whole job cannot run (bad config, lost cluster).
Closing the iterator early cancels all pending work. Executors are chosen by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from plait.errors import ConfigError

if TYPE_CHECKING:
    from plait.clients.base import Usage
    from plait.events import EventSink
    from plait.execution.results import RowResult
    from plait.execution.settings import ResolvedSettings
    from plait.graph import InferenceGraph
    from plait.module import Module
    from plait.resources.manager import ResourceManager

__all__ = ["Executor", "Job", "Row", "get_executor"]

Row = tuple[int, tuple[Any, ...], dict[str, Any]]
"""(index, positional inputs, keyword inputs) of one row."""

NodeHook = Callable[[int, str, Any, "Usage | None"], None]
"""Called as (row, node_id, value, usage) after each LLM node (checkpointing)."""


@dataclass
class Job:
    """Everything an executor needs to run rows through a graph.

    Attributes:
        module: The root module (its Parameters' current values are used).
        graph: The traced graph.
        rows: The rows to run (a lazy iterable: executors pull as capacity frees up).
        settings: Resolved settings (resources, limits, options).
        events: Event sink, or None.
        record: Keep node values per row (training mode) for backward().
        presets: Row -> node values already computed (resumed from a checkpoint).
        on_node: Hook after each LLM node, or None.
        manager: A resource manager shared across calls (ExecutionSettings), or None to create
            one for this job.
    """

    module: Module
    graph: InferenceGraph
    rows: Iterable[Row]
    settings: ResolvedSettings
    events: EventSink | None = None
    record: bool = False
    presets: Callable[[int], dict[str, Any] | None] | None = None
    on_node: NodeHook | None = None
    manager: ResourceManager | None = None


class Executor(Protocol):
    """Runs a ``Job``'s rows and yields their results as they finish."""

    name: str

    def execute(self, job: Job) -> AsyncIterator[RowResult]:
        """Yield one RowResult per row of ``job``."""
        ...

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per-alias request statistics of the last job."""
        ...


def get_executor(spec: Any) -> Executor:
    """An executor by name ("local", "ray") or the object itself."""
    if spec is None or spec == "local":
        from plait.execution.local import LocalExecutor

        return LocalExecutor()
    if spec == "ray":
        try:
            import importlib

            module = importlib.import_module("plait_ray.executor")
        except ImportError as exc:
            raise ConfigError(
                "Executor 'ray' needs plait_ray. Install it with: "
                f"pip install 'plait-pipelines[ray]' ({exc})"
            ) from exc
        executor: Executor = module.RayExecutor()
        return executor
    if isinstance(spec, str):
        raise ConfigError(f"Unknown executor {spec!r}. Use 'local' or 'ray', or pass an object "
                          "with an execute(job) method.")
    if not hasattr(spec, "execute"):
        raise ConfigError(f"executor must be 'local', 'ray' or an Executor, got {spec!r}.")
    return spec
