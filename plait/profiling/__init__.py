"""Profiling from the event stream: Perfetto traces, run summaries and progress bars.

All three consume ``plait.events.Event``: attach a ``TraceProfiler`` as the run's event sink,
then write the trace and summarise its events.
"""

from plait.profiling.progress import Progress, make_progress
from plait.profiling.summary import Bubble, EndpointSummary, RunSummary, find_bubbles, summarize
from plait.profiling.trace import TraceProfiler, assign_lanes, chrome_trace

__all__ = [
    "Bubble",
    "EndpointSummary",
    "Progress",
    "RunSummary",
    "TraceProfiler",
    "assign_lanes",
    "chrome_trace",
    "find_bubbles",
    "make_progress",
    "summarize",
]
