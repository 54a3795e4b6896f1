"""The HTTP adapter: ``from plait.batching.http import OpenAIResponsesExecutor``."""

from plait.batching._http import OpenAIResponsesExecutor, output_text

__all__ = ["OpenAIResponsesExecutor", "output_text"]
