"""plait on Ray: the ``"ray"`` executor and the pieces it runs inside Ray workers.

Select it by name, with no change to the pipeline::

    pipeline.bind(resources=config, executor="ray")
    ExecutionSettings(executor="ray", executor_options={"address": "auto", "workers": 4})
    await run(pipeline, rows, executor="ray")
"""

from plait_ray._ray_init import RayConnectionError, ensure_ray
from plait_ray.executor import RayExecutor
from plait_ray.runtime import RuntimeOptions, WorkerRuntime
from plait_ray.worker import WorkerLostError, shutdown_workers

__all__ = [
    "RayConnectionError",
    "RayExecutor",
    "RuntimeOptions",
    "WorkerLostError",
    "WorkerRuntime",
    "ensure_ray",
    "shutdown_workers",
]
