"""plait on Ray: the ``"ray"`` executor, dataset runs, and Ray Data integration.

Select the executor by name, with no change to the pipeline::

    pipeline.bind(resources=config, executor="ray")
    ExecutionSettings(executor="ray", executor_options={"address": "auto", "workers": 4})
    await run(pipeline, rows, executor="ray")

Whole datasets: :func:`run_dataset` (exactly-once, resumable Parquet output) and
:func:`map_dataset` (a lazy ``ray.data.Dataset`` stage for Ray Data pipelines).
"""

from plait_ray._ray_init import RayConnectionError, ensure_ray
from plait_ray.dataset import read_output, run_dataset
from plait_ray.executor import RayExecutor
from plait_ray.map_dataset import map_dataset
from plait_ray.runtime import RuntimeOptions, WorkerRuntime
from plait_ray.worker import WorkerLostError, shutdown_workers

__all__ = [
    "RayConnectionError",
    "RayExecutor",
    "RuntimeOptions",
    "WorkerLostError",
    "WorkerRuntime",
    "ensure_ray",
    "map_dataset",
    "read_output",
    "run_dataset",
    "shutdown_workers",
]
