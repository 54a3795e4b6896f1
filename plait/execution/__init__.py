"""Running traced graphs: settings, the executor contract, the local executor."""

from plait.execution.call import PendingCall, run
from plait.execution.contract import Executor, Job, get_executor
from plait.execution.inputs import Batch
from plait.execution.report import RunReport
from plait.execution.results import BatchResult, RowResult
from plait.execution.settings import ExecutionSettings, ResolvedSettings, get_execution_settings

__all__ = [
    "Batch",
    "BatchResult",
    "ExecutionSettings",
    "Executor",
    "Job",
    "PendingCall",
    "ResolvedSettings",
    "RowResult",
    "RunReport",
    "get_execution_settings",
    "get_executor",
    "run",
]
