"""pyarrow behind ``Any``: it ships no type stubs (as in ``plait.checkpoint._files``).

Its untyped API stays inside ``plait.io``; the aliases name what a value is for readers.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeAlias

__all__ = ["RecordBatch", "Table", "pa", "pads", "pq"]

pa: Any = importlib.import_module("pyarrow")
pq: Any = importlib.import_module("pyarrow.parquet")
pads: Any = importlib.import_module("pyarrow.dataset")

Table: TypeAlias = Any
"""A ``pyarrow.Table``."""

RecordBatch: TypeAlias = Any
"""A ``pyarrow.RecordBatch``."""
