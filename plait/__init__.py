"""plait: PyTorch-style LLM pipelines that run on one laptop or on a Ray cluster.

Example:
    >>> from plait import Module, LLMInference
    >>> class Summarize(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.llm = LLMInference(alias="fast", system_prompt="Summarize.")
    ...     def forward(self, text):
    ...         return self.llm(text)
    >>> result = await Summarize().bind(resources=resources)("Some text")
"""

from plait import functional
from plait.containers import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from plait.errors import (
    BatchError,
    CallError,
    ConfigError,
    InputError,
    LLMError,
    MissingAPIKeyError,
    NodeExecutionError,
    PlaitError,
    TraceError,
    TransientError,
)
from plait.execution import (
    Batch,
    BatchResult,
    ExecutionSettings,
    RunReport,
    get_execution_settings,
    run,
)
from plait.graph import InferenceGraph
from plait.llm import LLMInference
from plait.module import Module
from plait.parameter import Parameter
from plait.resources.config import (
    AnthropicEndpointConfig,
    EndpointConfig,
    OpenAIEndpointConfig,
    ResourceConfig,
)
from plait.tracing import Tracer, trace
from plait.values import Value, ValueKind, unwrap, valueify
from plait.visualize import visualize_graph

__version__ = "0.1.0"

__all__ = [
    "AnthropicEndpointConfig",
    "Batch",
    "BatchError",
    "BatchResult",
    "CallError",
    "ConfigError",
    "EndpointConfig",
    "ExecutionSettings",
    "InferenceGraph",
    "InputError",
    "LLMError",
    "LLMInference",
    "MissingAPIKeyError",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NodeExecutionError",
    "OpenAIEndpointConfig",
    "Parameter",
    "ParameterDict",
    "ParameterList",
    "PlaitError",
    "ResourceConfig",
    "RunReport",
    "Sequential",
    "TraceError",
    "Tracer",
    "TransientError",
    "Value",
    "ValueKind",
    "functional",
    "get_execution_settings",
    "run",
    "trace",
    "unwrap",
    "valueify",
    "visualize_graph",
]
