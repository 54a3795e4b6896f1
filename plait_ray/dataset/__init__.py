"""Dataset-scale runs on Ray: ``run_dataset(pipeline, source, output, resources=...)``.

The driver streams the source in chunks to worker actors; each worker runs its chunk's rows
through the same interpreter as a local run and commits the chunk as one Parquet part file
(see :mod:`plait.io` for the output schema and layout). Paid LLM results are committed by
plait per chunk, never left to Ray lineage: Ray Data's own checkpoints commit per write
bundle, and a Ray-level retry of a paid call can duplicate it. A rerun with the same output
directory skips committed rows, so every input row ends up in the output exactly once.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from plait.batch_api._run import with_journal_dir
from plait.cache import as_cache
from plait.errors import ConfigError
from plait.execution.checkpointing import pipeline_hash
from plait.execution.settings import resolve_settings
from plait.io import (
    ChunkStats,
    DatasetSummary,
    OutputDir,
    ResumeMode,
    check_input_columns,
    iter_chunks,
    read_output,
    resolve_columns,
)
from plait.io._retry import failed_parts
from plait.module import Module
from plait.pricing import RowBound, endpoint_price
from plait.profiling.progress import make_progress
from plait.profiling.trace import TraceProfiler
from plait_ray._ray_init import ensure_ray
from plait_ray.cluster_resources import hold_cluster_resources
from plait_ray.dataset._budget import BudgetGate, gated
from plait_ray.dataset._driver import Fleet, PartRetry, Work, drive
from plait_ray.dataset._sources import RayDataSource, open_ray_source
from plait_ray.dataset._worker import ChunkDone, DatasetPayload
from plait_ray.limits.caps import cap_holder
from plait_ray.runtime import RuntimeOptions, merge_stats
from plait_ray.worker import WorkerLostError

_ray: Any = ray  # the object-ref API is only partly typed

__all__ = ["DatasetSummary", "RayDataSource", "WorkerLostError", "read_output", "run_dataset"]

_OPTIONS = {
    "address", "namespace", "runtime_env", "num_cpus",  # ray.init (see _ray_init)
    "worker_num_cpus", "worker_resources", "scheduling_strategy", "env_vars",
    "max_chunks_in_flight", "limits_namespace", "metrics", "worker_start_timeout_s",
    "max_inflight", "max_concurrent", "env_file",
}
_MAX_CHUNK = 1000
_CHUNKS_PER_WORKER = 4  # enough chunks that every worker gets some and commits come often


def run_dataset(
    pipeline: Module,
    source: Any,
    output: str | Path,
    *,
    resources: Any = None,
    columns: Mapping[str, str] | None = None,
    checkpoint: bool = True,
    resume: ResumeMode = "auto",
    retry_failed: bool = True,
    rows_per_chunk: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    profile: str | Path | None = None,
    executor_options: Mapping[str, Any] | None = None,
    cache: Any = None,
    budget_usd: float | None = None,
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
        retry_failed: On resume, run the failed rows of committed parts again (their parts
            are rewritten in place); False keeps them as they are.
        rows_per_chunk: Rows per worker call and per committed part file (default: about
            four chunks per worker, at most 1000 rows; 256 when the size is unknown).
        workers: Worker actors (default: the cluster's CPUs, 1 to 4).
        progress: Show a progress bar (None: in terminals and notebooks).
        profile: Write a Chrome trace of the run here (events are shipped to the driver).
        executor_options: ``address``/``namespace``/``runtime_env``/``num_cpus`` for
            ``ray.init``; ``worker_num_cpus`` (0.1), ``worker_resources``,
            ``scheduling_strategy`` ("SPREAD"), ``env_vars`` (for the workers; values show
            in Ray's runtime_env_agent logs and dashboard), ``env_file`` (a NAME=VALUE file
            each worker reads itself, e.g. a mounted secret: keys stay out of Ray's logs),
            ``max_chunks_in_flight`` (2 per worker), ``limits_namespace``,
            ``metrics`` (True), ``worker_start_timeout_s`` (120), ``max_inflight``,
            ``max_concurrent``.
        cache: A response-cache directory (``plait.cache``): replies are stored there and
            reused by any later run, on any node. On a cluster it must be a path every node
            mounts (NFS, EFS, a shared disk): a node-local directory only serves that node.
        budget_usd: Start no new chunk once the spend the workers reported + the
            reservations of chunks in flight would exceed this (see
            ``plait_ray.dataset._budget``); the rows left are not committed, so a rerun with
            the same output runs them. ``DatasetSummary.budget`` reports how it ended.

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
    if rows_per_chunk is not None and rows_per_chunk < 1:
        raise ConfigError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}: pass a "
                          "positive number of rows per committed part, or None to size it "
                          "from the dataset and workers.")
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
    # Batched endpoints (plait.batch_api) journal their batch ids in the output directory.
    journaled = with_journal_dir(settings.resources, out.path, subdir="_batch_api",
                                 fresh=not checkpoint or resume == "fresh")
    if journaled is not settings.resources:
        settings = dataclasses.replace(settings, resources=journaled)
    committed = out.committed_ranges()
    count = workers or _default_workers()
    if count < 1:
        raise ConfigError(f"workers must be >= 1, got {count}.")
    chunk_rows_ = rows_per_chunk or _chunk_size(src.total, count)
    retries = _failed_parts(out) if retry_failed else []
    namespace = hold_cluster_resources(settings.resources, graph.aliases(), options)
    # The global max_concurrent is leased cluster-wide (exact), not split over workers.
    cap, cap_key = settings.max_concurrent, uuid.uuid4().hex
    caps = None if cap is None else cap_holder(graph.aliases(), settings.resources, namespace)
    payload = DatasetPayload(
        module=pipeline, graph=graph, resources=settings.resources, mapping=mapping,
        output=out.path, options=dataclasses.replace(
            RuntimeOptions.from_settings(settings, workers=count), max_concurrent=None),
        workers=count, namespace=namespace,
        metrics=bool(options.get("metrics", True)), collect_events=profile is not None,
        env_file=options.get("env_file"), cache=as_cache(cache),
        cap=cap if caps is not None else None, caps=caps, cap_key=cap_key,
    )
    # Pickled here and loaded by the worker itself, so a module the workers cannot import is
    # reported by name (WorkerImportError) instead of an actor that never starts.
    pickler: Any = importlib.import_module("ray.cloudpickle")
    payload_ref: Any = _ray.put(pickler.dumps(payload))
    fleet = Fleet(payload_ref, count, _actor_options(options),
                  float(options.get("worker_start_timeout_s", 120.0)))
    profiler = TraceProfiler() if profile is not None else None
    ran = ChunkStats()
    bar = make_progress(src.total, progress, f"{type(pipeline).__name__} rows")
    bar.update(sum(hi - lo for lo, hi in committed) - sum(n for _, n in retries))
    shown = [0, 0]  # rows this call counted on the bar: succeeded, failed
    paid = [0.0]  # USD this call showed on the bar

    gate = (None if budget_usd is None else BudgetGate(
        budget_usd, RowBound(graph, pipeline,
                             lambda alias: endpoint_price(settings.resources.get(alias))),
        mapping, out))

    def on_rows(ok: int, failed: int, usd: float = 0.0) -> None:
        if gate is not None:
            gate.observe(ok, failed, usd)
        cost = max(0.0, usd - paid[0])
        paid[0] = max(paid[0], usd)
        if ok > shown[0]:
            bar.update(ok - shown[0], cost_usd=cost)
            shown[0], cost = ok, 0.0
        if failed > shown[1]:
            bar.update(failed - shown[1], failed=True, cost_usd=cost)
            shown[1] = failed

    def on_done(_work: Work, done: ChunkDone) -> None:
        if done.stats.skipped:
            bar.update(done.stats.rows)  # committed by a worker that died: not polled
        else:
            ran.add(done.stats)
        if profiler is not None:
            profiler.extend(done.events)

    stats: list[dict[str, dict[str, Any]]] = []
    try:
        work: itertools.chain[Work] = itertools.chain(
            (part for part, _ in retries),
            iter_chunks(src.batches(chunk_rows_), chunk_rows_, committed))
        drive(work, fleet, int(options.get("max_chunks_in_flight", 2 * count)),
              gated(on_done, gate), on_rows, gate.admit if gate is not None else None)
        on_rows(*fleet.poll_rows())
    finally:
        bar.close()
        stats = fleet.close()
        if caps is not None:
            caps.cap_close.remote(cap_key)
    if profiler is not None and profile is not None:
        profiler.write(profile)
    cost = sum(float(s.get("cost", 0.0)) for s in merge_stats(stats).values())
    total = out.committed_stats()
    budget = None
    if gate is not None:
        left = max(0, src.total - total.rows) if src.total is not None else 0
        budget = gate.report(left)
    return DatasetSummary(total.rows, total.errors, total.input_tokens, total.output_tokens,
                          cost, time.perf_counter() - started, out.path, ran.rows, budget)


def _chunk_size(total: int | None, workers: int) -> int:
    """Rows per chunk: about four per worker, at most 1000.

    So every worker has work and commits come often: 500 rows on 2 workers commit every 63.
    """
    if total is None:
        return 256
    return max(1, min(_MAX_CHUNK, math.ceil(total / (workers * _CHUNKS_PER_WORKER))))


def _failed_parts(out: OutputDir) -> list[tuple[PartRetry, int]]:
    """Committed parts holding failed rows, with their failed-row counts (from footers)."""
    return [(PartRetry(start, end), errors) for start, end, errors in failed_parts(out)]


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
