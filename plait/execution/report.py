"""Watching a run: events, progress, the profile, and the report left on the module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.execution.checkpointing import CheckpointSession, open_checkpoint
from plait.profiling.progress import make_progress
from plait.profiling.summary import RunSummary, summarize
from plait.profiling.trace import TraceProfiler

if TYPE_CHECKING:
    from plait.events import EventSink
    from plait.execution.contract import Executor, Job
    from plait.execution.inputs import CallInputs
    from plait.execution.results import RowResult
    from plait.execution.settings import ResolvedSettings
    from plait.execution.shared import SharedRuntime
    from plait.graph import InferenceGraph
    from plait.module import Module
    from plait.pricing import BudgetReport
    from plait.resources.manager import ResourceManager

__all__ = ["RunObserver", "RunReport"]

DEFAULT_PROFILE_PATH = Path("plait-trace.json")


@dataclass
class RunReport:
    """What one pipeline call did; left on the module as ``module.last_run``.

    Attributes:
        wall_time: Seconds from start to the last row.
        rows: Rows finished (including rows restored from a checkpoint).
        failed: Rows that failed.
        resumed: Rows restored from a checkpoint without running.
        endpoints: Alias -> requests, tokens, retries, 429s, cost estimate, latency.
        summary: With ``profile=True``: utilisation, bubbles and latency percentiles.
        profile_path: Where the Chrome trace was written, if profiling.
        cost_usd: What this call's LLM calls cost (``plait.pricing`` prices).
        cache: With ``cache=``: hits, misses, writes, corrupt entries, USD saved.
        budget: With ``budget_usd=``: spent, rows done and rows not started.
    """

    wall_time: float = 0.0
    rows: int = 0
    failed: int = 0
    resumed: int = 0
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    profile_path: Path | None = None
    cost_usd: float = 0.0
    cache: dict[str, Any] | None = None
    budget: BudgetReport | None = None
    _summarize: Callable[[], RunSummary] | None = field(default=None, repr=False)
    _summary: RunSummary | None = field(default=None, repr=False)

    @property
    def summary(self) -> RunSummary | None:
        """With ``profile=True``: utilisation, bubbles and latency percentiles.

        Computed on first access, so a run that never reads it does not pay for it.
        """
        if self._summary is None and self._summarize is not None:
            self._summary, self._summarize = self._summarize(), None
        return self._summary

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return {
            "wall_time": self.wall_time, "rows": self.rows, "failed": self.failed,
            "resumed": self.resumed, "endpoints": self.endpoints,
            "summary": self.summary.to_dict() if self.summary is not None else None,
            "profile_path": str(self.profile_path) if self.profile_path else None,
            "cost_usd": self.cost_usd, "cache": self.cache,
            "budget": self.budget.to_dict() if self.budget is not None else None,
        }


class RunObserver:
    """Everything a call watches besides the rows themselves."""

    def __init__(self, module: Module, settings: ResolvedSettings, total: int | None, *,
                 shared: SharedRuntime | None, batch: bool = True) -> None:
        self.module = module
        self.settings = settings
        self.total = total
        self.profiler = TraceProfiler() if settings.profile else None
        self.events: EventSink | None = self.profiler
        self.manager: ResourceManager | None = None
        if shared is not None:
            self.manager = shared.manager(settings)
        self.progress = make_progress(total, settings.progress if batch else False,
                                      desc=type(module).__name__)
        self.report = RunReport()
        self.checkpoint: CheckpointSession | None = None

    def open_checkpoint(self, graph: InferenceGraph, inputs: CallInputs,
                        job: Job) -> CheckpointSession:
        """Resume from / record into ``settings.checkpoint_dir`` (a no-op session if unset)."""
        self.checkpoint = open_checkpoint(self.module, graph, inputs, job, self.settings)
        return self.checkpoint

    def row_done(self, result: RowResult) -> None:
        """Count a finished row."""
        report = self.report
        report.rows += 1
        failed = result.error is not None
        report.failed += failed
        report.cost_usd += result.cost_usd
        self.progress.update(1, failed=failed, cost_usd=result.cost_usd)
        if self.settings.on_progress is not None:
            self.settings.on_progress(report.rows, self.total)

    def finish(self, executor: Executor, wall_time: float) -> None:
        """Write the profile and leave the report on the module."""
        self.progress.close()
        report = self.report
        report.wall_time = wall_time
        report.endpoints = executor.endpoint_stats()
        meter = getattr(executor, "meter", None)
        if meter is not None and meter.cache is not None:
            report.cache = meter.counters.to_dict()
        elif self.settings.cache is not None:  # e.g. Ray: hits counted by the workers
            report.cache = {"hits": sum(int(s.get("cache_hits", 0))
                                        for s in report.endpoints.values())}
        budget = getattr(executor, "budget", None)
        if budget is not None:
            report.budget = budget.report()
        if self.checkpoint is not None:
            report.resumed = self.checkpoint.resumed
        if self.profiler is not None:
            extra = getattr(executor, "collected_events", None)
            if extra is not None:
                self.profiler.extend(extra())
            limits = {alias: getattr(cfg, "max_concurrent", None)
                      for alias, cfg in self.settings.resources.endpoints.items()}
            events, stats = self.profiler.events, report.endpoints
            report._summarize = lambda: summarize(  # pyright: ignore[reportPrivateUsage]
                events, max_concurrent=limits, wall_time=wall_time, endpoint_stats=stats)
            path = self.settings.profile_path or DEFAULT_PROFILE_PATH
            report.profile_path = self.profiler.write(path)
        object.__setattr__(self.module, "last_run", report)
