"""Dataset-scale runs on Ray: ``run_dataset(pipeline, source, output, resources=...)``.

The driver streams the source in chunks to worker actors; each worker runs its chunk's rows
through the same interpreter as a local run and commits the chunk as one Parquet part file
(see :mod:`plait.io` for the output schema and layout). Paid LLM results are committed by
plait per chunk, never left to Ray lineage: Ray Data's own checkpoints commit per write
bundle, and a Ray-level retry of a paid call can duplicate it. A rerun with the same output
directory skips committed rows, so every input row ends up in the output exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from plait.errors import ConfigError
from plait.execution.checkpointing import pipeline_hash
from plait.execution.settings import resolve_settings
from plait.io import (
    Chunk,
    ChunkStats,
    DatasetSummary,
    OutputDir,
    ResumeMode,
    check_input_columns,
    iter_chunks,
    read_output,
    resolve_columns,
)
from plait.module import Module
from plait.profiling.progress import make_progress
from plait.profiling.trace import TraceProfiler
from plait_ray._ray_init import ensure_ray
from plait_ray.cluster_resources import hold_cluster_resources
from plait_ray.dataset._driver import Fleet, drive
from plait_ray.dataset._sources import RayDataSource, open_ray_source
from plait_ray.dataset._worker import ChunkDone, DatasetPayload
from plait_ray.runtime import RuntimeOptions, merge_stats
from plait_ray.worker import WorkerLostError

__all__ = ["DatasetSummary", "RayDataSource", "WorkerLostError", "read_output", "run_dataset"]

_OPTIONS = {
    "address", "namespace", "runtime_env", "num_cpus",  # ray.init (see _ray_init)
    "worker_num_cpus", "worker_resources", "scheduling_strategy", "env_vars",
    "max_chunks_in_flight", "limits_namespace", "metrics", "worker_start_timeout_s",
    "max_inflight", "max_concurrent",
}


def run_dataset(
    pipeline: Module,
    source: Any,
    output: str | Path,
    *,
    resources: Any = None,
    columns: Mapping[str, str] | None = None,
    checkpoint: bool = True,
    resume: ResumeMode = "auto",
    rows_per_chunk: int = 1000,
    workers: int | None = None,
    progress: bool | None = None,
    profile: str | Path | None = None,
    executor_options: Mapping[str, Any] | None = None,
) -> DatasetSummary:
    """Run ``pipeline`` over every row of ``source`` on Ray; write a Parquet dataset.

    Args:
        pipeline: The pipeline; each forward() argument reads a source column.
        source: A ``ray.data.Dataset``, a Parquet/CSV/JSON-lines path (file or directory), or
            a list of dicts.
        output: The output directory (shared storage every worker can write).
        resources: A ``ResourceConfig``, dict or YAML path (default: the pipeline's bound).
        columns: forward() argument -> column; by default an argument reads its namesake.
        checkpoint: Resume from the parts already in ``output``; False starts over.
        resume: "auto" resumes only the same pipeline and source, "force" resumes anyway,
            "fresh" deletes earlier parts.
        rows_per_chunk: Rows per worker call and per committed part file.
        workers: Worker actors (default: the cluster's CPUs, 1 to 4).
        progress: Show a progress bar (None: in terminals and notebooks).
        profile: Write a Chrome trace of the run here (events are shipped to the driver).
        executor_options: ``address``/``namespace``/``runtime_env``/``num_cpus`` for
            ``ray.init``; ``worker_num_cpus`` (0.1), ``worker_resources``,
            ``scheduling_strategy`` ("SPREAD"), ``env_vars`` (for the workers, e.g. key
            variables), ``max_chunks_in_flight`` (2 per worker), ``limits_namespace``,
            ``metrics`` (True), ``worker_start_timeout_s`` (120), ``max_inflight``,
            ``max_concurrent``.

    Returns:
        Counts of the whole output, and this call's cost and time.

    Raises:
        InputError: The source cannot be read or lacks a forward() argument's column.
        CheckpointError: ``output`` holds another pipeline's or source's results.
        WorkerLostError: Every worker died and none could be replaced.

    Example:
        >>> summary = run_dataset(pipeline, "reviews.parquet", "out/",
        ...                       resources="resources.yaml")  # doctest: +SKIP
        >>> print(summary.format())  # doctest: +SKIP
    """
    started = time.perf_counter()
    options = dict(executor_options or {})
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"Unknown executor_options {unknown} for run_dataset. Valid: "
                          f"{sorted(_OPTIONS)}.")
    if rows_per_chunk < 1:
        raise ConfigError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}.")
    ensure_ray(options)
    overrides: dict[str, Any] = {k: options[k] for k in ("max_inflight", "max_concurrent")
                                 if options.get(k) is not None}
    if resources is not None:
        overrides["resources"] = resources
    settings, _ = resolve_settings(overrides, pipeline.__dict__.get("_bound"))
    src = open_ray_source(source)
    check_input_columns(src.column_names())
    mapping = resolve_columns(pipeline, src.column_names(), columns)
    graph = pipeline.graph_for(0, tuple(sorted(mapping)))
    out = OutputDir(Path(output).resolve())
    out.prepare(pipeline_hash(pipeline, graph), src.description,
                resume if checkpoint else "fresh", total=src.total)
    committed = out.committed_ranges()
    count = workers or _default_workers()
    if count < 1:
        raise ConfigError(f"workers must be >= 1, got {count}.")
    payload = DatasetPayload(
        module=pipeline, graph=graph, resources=settings.resources, mapping=mapping,
        output=out.path, options=RuntimeOptions.from_settings(settings, workers=count),
        workers=count,
        namespace=hold_cluster_resources(settings.resources, graph.aliases(), options),
        metrics=bool(options.get("metrics", True)), collect_events=profile is not None,
    )
    payload_ref: Any = ray.put(payload)  # pyright: ignore[reportUnknownMemberType]
    fleet = Fleet(payload_ref, count, _actor_options(options),
                  float(options.get("worker_start_timeout_s", 120.0)))
    profiler = TraceProfiler() if profile is not None else None
    ran = ChunkStats()
    bar = make_progress(src.total, progress, f"{type(pipeline).__name__} rows")
    bar.update(sum(hi - lo for lo, hi in committed))

    def on_done(chunk: Chunk, done: ChunkDone) -> None:
        if not done.stats.skipped:
            ran.add(done.stats)
        if profiler is not None:
            profiler.extend(done.events)
        bar.update(done.stats.rows - done.stats.errors)
        if done.stats.errors:
            bar.update(done.stats.errors, failed=True)

    stats: list[dict[str, dict[str, Any]]] = []
    try:
        chunks = iter_chunks(src.batches(rows_per_chunk), rows_per_chunk, committed)
        drive(chunks, fleet, int(options.get("max_chunks_in_flight", 2 * count)), on_done)
    finally:
        bar.close()
        stats = fleet.close()
    if profiler is not None and profile is not None:
        profiler.write(profile)
    cost = sum(float(s.get("cost", 0.0)) for s in merge_stats(stats).values())
    total = out.committed_stats()
    return DatasetSummary(total.rows, total.errors, total.input_tokens, total.output_tokens,
                          cost, time.perf_counter() - started, out.path, ran.rows)


def _default_workers() -> int:
    cpus = float(ray.cluster_resources().get("CPU", 1))  # pyright: ignore[reportUnknownMemberType]
    return max(1, min(4, int(cpus)))


def _actor_options(options: Mapping[str, Any]) -> dict[str, Any]:
    actor: dict[str, Any] = {
        "num_cpus": options.get("worker_num_cpus", 0.1),
        "max_restarts": 0,
        "max_task_retries": 0,
        "scheduling_strategy": options.get("scheduling_strategy", "SPREAD"),
    }
    if options.get("worker_resources"):
        actor["resources"] = dict(options["worker_resources"])
    if options.get("env_vars"):
        actor["runtime_env"] = {"env_vars": dict(options["env_vars"])}
    return actor
