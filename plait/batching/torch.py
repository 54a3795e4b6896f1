"""The Torch adapter: ``from plait.batching.torch import TorchExecutor``."""

from plait.batching._torch import TorchExecutor

__all__ = ["TorchExecutor"]
