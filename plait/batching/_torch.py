"""``TorchExecutor``: a batch executor that runs a PyTorch model on a collated micro-batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from plait.errors import ConfigError

__all__ = ["TorchExecutor"]


class TorchExecutor:
    """Collate a micro-batch, run ``model`` once on it, split the output per item.

    Use it as the executor of a ``Batcher`` / ``AsyncBatcher`` / ``@autobatch`` so that many
    single-item calls (from threads or coroutines) share one forward pass.

    Args:
        model: A callable taking the collated batch (a ``torch.nn.Module`` usually).
        collate_fn: Items -> one batch; default ``torch.stack`` (items are tensors).
        device: Where the batch goes before the forward pass (``"cpu"``, ``"cuda"``...).
        split_fn: The model's output -> one output per item; default: split a tensor (or a
            tuple/list of tensors) along dimension 0 and move the parts to the CPU.
        inference_mode: Run under ``torch.inference_mode()`` (no autograd bookkeeping).

    Example:
        >>> executor = TorchExecutor(model=model, collate_fn=collate, device="cuda")
        >>> batcher = Batcher(max_batch=64, max_wait_ms=5)
        >>> batcher.run(x, executor=executor)
    """

    def __init__(
        self,
        model: Callable[[Any], Any],
        collate_fn: Callable[[list[Any]], Any] | None = None,
        device: str = "cpu",
        *,
        split_fn: Callable[[Any], Sequence[Any]] | None = None,
        inference_mode: bool = True,
    ) -> None:
        from plait.local_models.torch_adapter import import_torch

        self._torch = import_torch()
        if not callable(model):
            raise ConfigError(f"TorchExecutor needs a callable model, got {type(model).__name__}.")
        self.model = model
        self.collate_fn = collate_fn or self._torch.stack
        self.device = device
        self.split_fn = split_fn or _split_rows
        self.inference_mode = inference_mode

    def __call__(self, items: list[Any]) -> list[Any]:
        """One forward pass for the whole micro-batch; one output per item, in order."""
        torch = self._torch
        batch = _to_device(self.collate_fn(items), self.device)
        if self.inference_mode:
            with torch.inference_mode():
                output = self.model(batch)
        else:
            output = self.model(batch)
        return list(self.split_fn(output))

    def __repr__(self) -> str:
        return f"TorchExecutor(model={type(self.model).__name__}, device={self.device!r})"


def _to_device(batch: Any, device: str) -> Any:
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(batch, list | tuple):
        moved = [_to_device(v, device) for v in batch]  # pyright: ignore[reportUnknownVariableType]
        return moved if isinstance(batch, list) else tuple(moved)
    return batch


def _split_rows(output: Any) -> list[Any]:
    if isinstance(output, tuple | list):
        columns = [_split_rows(part) for part in output]  # pyright: ignore[reportUnknownVariableType]
        return [tuple(row) for row in zip(*columns, strict=True)]
    if hasattr(output, "unbind"):
        return list(output.detach().cpu().unbind(0))
    raise ConfigError(
        f"TorchExecutor cannot split a {type(output).__name__} into per-item outputs; pass "
        "split_fn=... that returns one output per input."
    )
