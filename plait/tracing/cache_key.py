"""What a cached graph depends on, besides its input shape.

A graph holds literals that forward() read from plain module attributes (``self.prefix``, a
list of few-shot examples joined into a prompt). Assigning an attribute already invalidates
cached graphs (``Module.__setattr__``), but changing one in place (``self.examples.append``)
does not call ``__setattr__``. So the key holds a snapshot of the plain data attributes of
every module whose forward() is traced: strings, numbers and (small) lists, tuples, dicts and
sets of them, by content. Other objects count only through ``__setattr__`` (an in-place change
inside them cannot be seen; bookkeeping such as ``last_run`` is not part of the trace).
Leaf modules are not traced through: their attribute assignments count, their data does not
(a leaf may keep growing state at run time). Parameter values are never in it: graphs read
them through ``param`` nodes when rows run.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["graph_key"]

# Past this many items a container is keyed by identity and length only (a per-call cost
# bound for modules that hold large data; an in-place edit keeping the length is then missed).
_MAX_ITEMS = 10_000
_PLAIN = (str, int, float, bool, bytes, type(None))
_DATA = (*_PLAIN, list, tuple, dict, set, frozenset)


def graph_key(root: Module) -> tuple[Any, ...]:
    """A hashable snapshot of everything in ``root``'s tree that can change its trace."""
    parts: list[Any] = []
    for module in root.modules():
        d = module.__dict__
        if module.leaf:
            parts.append((d["_structure_version"], d["training"]))
            continue
        budget = [_MAX_ITEMS]
        attrs = tuple((name, _freeze(value, budget)) for name, value in d.items()
                      if isinstance(value, _DATA) and not name.startswith("_")
                      and name != "training")
        parts.append((d["_structure_version"], d["training"], attrs))
    return tuple(parts)


def _freeze(value: Any, budget: list[int]) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return "object"  # inside a container: counted by position, not content
    container = cast("Collection[Any]", value)
    size = len(container)
    budget[0] -= size
    if budget[0] < 0:
        return ("big", id(container), size)
    if isinstance(container, dict):
        items = cast("dict[Any, Any]", container).items()
        return ("dict", tuple((_freeze(k, budget), _freeze(v, budget)) for k, v in items))
    if isinstance(container, set | frozenset):
        return ("set", tuple(sorted(repr(_freeze(v, budget)) for v in container)))
    return (type(container).__name__, tuple(_freeze(v, budget) for v in container))
