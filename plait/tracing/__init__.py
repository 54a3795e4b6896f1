"""Tracing forward() into an InferenceGraph."""

from plait.tracing.proxy import Proxy
from plait.tracing.tracer import Tracer, trace

__all__ = ["Proxy", "Tracer", "trace"]
