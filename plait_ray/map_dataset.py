"""``map_dataset``: a plait pipeline as one lazy, streaming stage of a Ray Data pipeline.

::

    ds = ray.data.read_parquet("s3://bucket/reviews/")
    ds = plait_ray.map_dataset(ds, Classify(), resources="resources.yaml")
    ds = ds.filter(lambda row: row["error"] is None)
    ds.write_parquet("s3://bucket/labelled/")

The stage is ``Dataset.map_batches`` over a pool of actors, each running rows through the
same interpreter and cluster-wide limiter actors as :func:`plait_ray.run_dataset`; nothing
runs until the dataset is consumed, and the driver never iterates the rows. Each output row
holds its input columns plus ``output``, ``error`` (a failed row is kept, with its error),
``input_tokens``, ``output_tokens`` and ``latency_s``; there is no ``row_id``, because Ray Data
does not give rows a stable position.

``map_dataset`` is at-least-once: Ray Data retries failed tasks and recomputes lost blocks, so
a row can be paid twice, and nothing is committed before the final write. For paid runs that
must be exactly-once and resumable, use :func:`plait_ray.run_dataset`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from plait.errors import ConfigError
from plait.execution.settings import resolve_settings
from plait.io import (
    Chunk,
    ColumnMap,
    check_input_columns,
    chunk_rows,
    resolve_columns,
    result_table,
)
from plait.module import Module
from plait_ray._env_file import load_env_file
from plait_ray._ray_init import ensure_ray
from plait_ray.cluster_resources import hold_cluster_resources
from plait_ray.dataset._worker import ClosingPermits
from plait_ray.limits import leased_permit_factory
from plait_ray.limits.caps import call_cap_permits, cap_holder
from plait_ray.metrics import RayMetricsSink
from plait_ray.replica_client import replica_client_factory
from plait_ray.runtime import RuntimeOptions, WorkerRuntime

if TYPE_CHECKING:
    from plait.graph import InferenceGraph
    from plait.resources.config import ResourceConfig

__all__ = ["map_dataset"]

_OPTIONS = {
    "address", "namespace", "runtime_env", "num_cpus",  # ray.init (see _ray_init)
    "worker_num_cpus", "worker_resources", "limits_namespace", "metrics", "max_inflight",
    "max_concurrent", "env_vars", "env_file",
}


@dataclass(frozen=True)
class _MapPayload:
    module: Module
    graph: InferenceGraph
    resources: ResourceConfig
    mapping: ColumnMap
    options: RuntimeOptions
    namespace: str
    metrics: bool
    env_file: str | None
    cap: int | None = None  # the global max_concurrent, leased from caps (plait_ray.limits.caps)
    caps: Any = None
    cap_key: str = ""


def map_dataset(
    dataset: Any,
    pipeline: Module,
    *,
    resources: Any = None,
    columns: Mapping[str, str] | None = None,
    workers: int | None = None,
    batch_size: int = 64,
    executor_options: Mapping[str, Any] | None = None,
) -> Any:
    """Add ``pipeline`` to ``dataset`` as a lazy ``map_batches`` stage; return the new dataset.

    Args:
        dataset: A ``ray.data.Dataset``.
        pipeline: The pipeline; each forward() argument reads a column.
        resources: A ``ResourceConfig``, dict or YAML path (default: the pipeline's bound).
        columns: forward() argument -> column; by default an argument reads its namesake.
        workers: Actors in the pool (default: the cluster's CPUs, 1 to 4).
        batch_size: Rows per batch; a batch's rows run concurrently in one actor.
        executor_options: ``address``/``namespace``/``runtime_env``/``num_cpus`` for
            ``ray.init``; ``worker_num_cpus`` (0.1), ``worker_resources``, ``env_vars``
            (for the actors; shown in Ray's logs), ``env_file`` (a NAME=VALUE file each actor
            reads itself; keys stay out of Ray's logs), ``limits_namespace``, ``metrics``
            (True), ``max_inflight``, ``max_concurrent``.

    Returns:
        A ``ray.data.Dataset`` with the input columns and ``output``, ``error``,
        ``input_tokens``, ``output_tokens``, ``latency_s``.

    Raises:
        ConfigError: Unknown options, or ``workers``/``batch_size`` below 1.
        InputError: The dataset lacks a forward() argument's column, or has a column named
            like a result column.

    Example:
        >>> ds = map_dataset(ray.data.read_parquet("in/"), Classify(),  # doctest: +SKIP
        ...                  resources="resources.yaml")
        >>> ds.filter(lambda r: r["error"] is None).write_parquet("out/")  # doctest: +SKIP
    """
    options = dict(executor_options or {})
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"Unknown executor_options {unknown} for map_dataset. Valid: "
                          f"{sorted(_OPTIONS)}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    ensure_ray(options)
    count = workers or max(1, min(4, int(float(
        ray.cluster_resources().get("CPU", 1)))))  # pyright: ignore[reportUnknownMemberType]
    if count < 1:
        raise ConfigError(f"workers must be >= 1, got {count}.")
    overrides: dict[str, Any] = {k: options[k] for k in ("max_inflight", "max_concurrent")
                                 if options.get(k) is not None}
    if resources is not None:
        overrides["resources"] = resources
    settings, _ = resolve_settings(overrides, pipeline.__dict__.get("_bound"))
    schema: Any = dataset.schema()
    names: list[str] = list(schema.names) if schema is not None else []
    check_input_columns(names)
    mapping = resolve_columns(pipeline, names, columns)
    graph = pipeline.graph_for(0, tuple(sorted(mapping)))
    namespace = hold_cluster_resources(settings.resources, graph.aliases(), options)
    # The global max_concurrent is leased cluster-wide (exact), not split over the actors.
    # Its core lives in the first alias's limiter until that actor ends: a lazy dataset has
    # no end to close it at (a few hundred bytes; the actors' leases expire on their own).
    cap = settings.max_concurrent
    caps = None if cap is None else cap_holder(graph.aliases(), settings.resources, namespace)
    payload = _MapPayload(
        module=pipeline, graph=graph, resources=settings.resources, mapping=mapping,
        options=dataclasses.replace(RuntimeOptions.from_settings(settings, workers=count),
                                    max_concurrent=None),
        namespace=namespace,
        metrics=bool(options.get("metrics", True)), env_file=options.get("env_file"),
        cap=cap if caps is not None else None, caps=caps, cap_key=uuid.uuid4().hex,
    )
    extra: dict[str, Any] = {}
    if options.get("worker_resources"):
        extra["resources"] = dict(options["worker_resources"])
    if options.get("env_vars"):
        extra["runtime_env"] = {"env_vars": dict(options["env_vars"])}
    # Imported here: ray.data needs pandas, which a plain `ray` install lacks.
    ray_data: Any = importlib.import_module("ray.data")
    return dataset.map_batches(
        _PlaitBatchMapper, fn_constructor_args=(ray.put(payload),),  # pyright: ignore[reportUnknownMemberType]
        batch_format="pyarrow", batch_size=batch_size,
        compute=ray_data.ActorPoolStrategy(min_size=1, max_size=count),
        num_cpus=options.get("worker_num_cpus", 0.1), **extra)


class _PlaitBatchMapper:
    """One actor of the pool: its own event loop, clients and leased limiter permits."""

    def __init__(self, payload_or_ref: Any) -> None:
        ray_any: Any = ray  # the object-ref API is only partly typed
        is_ref = isinstance(payload_or_ref, ray_any.ObjectRef)
        payload: _MapPayload = ray_any.get(payload_or_ref) if is_ref else payload_or_ref
        self._payload = payload
        if payload.env_file:
            load_env_file(payload.env_file)
        self._metrics = (RayMetricsSink(type(payload.module).__name__)
                         if payload.metrics else None)
        # Ray Data calls __call__ from one thread; one loop for the actor's life keeps the
        # HTTP clients (bound to their loop) reusable across batches.
        self._loop = asyncio.new_event_loop()
        self._permits = ClosingPermits(leased_permit_factory(payload.namespace))
        cap = None
        if payload.cap is not None and payload.caps is not None:
            cap = call_cap_permits(payload.caps, payload.cap_key, payload.cap)
        self._runtime = WorkerRuntime(
            payload.module, payload.graph, payload.resources, options=payload.options,
            events=self._metrics, permit_factory=self._permits,
            client_factory=replica_client_factory(), global_permits=cap)
        self._loop.run_until_complete(self._runtime.start())  # a missing key fails here

    def __call__(self, batch: Any) -> Any:
        """Run the batch's rows; return them with the result columns."""
        chunk = Chunk(0, batch)
        rows = chunk_rows(chunk, self._payload.mapping)
        results = self._loop.run_until_complete(self._runtime.run_rows(rows))
        if self._metrics is not None:
            failed = sum(r.error is not None for r in results)
            self._metrics.rows_finished(len(results) - failed, failed)
        table = result_table(batch, list(range(len(rows))), {r.index: r for r in results})
        return table.drop_columns(["row_id"])

    def __del__(self) -> None:
        # Close the clients before the loop, so no task is left pending on a closed loop.
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed():
            return
        try:
            loop.run_until_complete(self._runtime.aclose())
            loop.run_until_complete(self._permits.aclose())
            if self._metrics is not None:
                self._metrics.flush()
        finally:
            loop.close()
