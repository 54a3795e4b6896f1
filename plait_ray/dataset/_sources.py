"""Dataset sources on Ray: a ``ray.data.Dataset`` streamed in order, besides plait's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plait.io import Source, open_source
from plait.io._arrow import RecordBatch

__all__ = ["RayDataSource", "open_ray_source"]


class RayDataSource(Source):
    """A ``ray.data.Dataset`` (needs ``ray[data]``) read with ``iter_batches`` in a stable order.

    Row ids are positions, so the order must be the same on every run: ``preserve_order`` is
    switched on for this dataset's execution (Ray Data may otherwise reorder blocks).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.description = f"ray.data:{dataset.schema()}"
        self.total = None

    def column_names(self) -> list[str]:
        """The dataset's columns."""
        schema: Any = self.dataset.schema()
        return list(schema.names) if schema is not None else []

    def batches(self, batch_size: int) -> Iterator[RecordBatch]:
        """The rows in order, one Arrow batch at a time (Ray Data streams the rest)."""
        context = self.dataset.context
        context.execution_options.preserve_order = True
        dataset: Any = self.dataset
        for table in dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow",
                                          prefetch_batches=1):
            yield from table.to_batches()


def open_ray_source(source: Any) -> Source:
    """A ``Source`` for a ``ray.data.Dataset``, a path or a list of dicts."""
    # Duck-typed: importing ray.data needs pandas, which plain Ray installs lack.
    if type(source).__module__.startswith("ray.data") and hasattr(source, "iter_batches"):
        return RayDataSource(source)
    return open_source(source)
