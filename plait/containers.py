"""Containers of modules and parameters, as in ``torch.nn``.

Every item is checked when it is added: a ``Sequential``/``ModuleList``/``ModuleDict`` holds
Modules only, a ``ParameterList``/``ParameterDict`` Parameters only; anything else raises
``ModuleDefinitionError`` (a ``TypeError``) naming the item, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar, cast, overload

from plait.errors import ModuleDefinitionError
from plait.module import Module
from plait.parameter import Parameter

__all__ = ["ModuleDict", "ModuleList", "ParameterDict", "ParameterList", "Sequential"]

T = TypeVar("T", Module, Parameter)


class _Items(Module, Generic[T]):
    """What the containers share: one registry (children or parameters), checked on entry."""

    _registry: ClassVar[str] = "_children"
    _item_type: ClassVar[type[Any]] = Module

    def _store(self) -> dict[str, T]:
        return cast("dict[str, T]", self.__dict__[self._registry])

    def _replace_all(self, items: Iterable[tuple[str, T]]) -> None:
        # Order is the registry's order, so a reorder rebuilds it; the graph is re-traced.
        self.__dict__[self._registry] = dict(items)
        self._changed()

    def _checked(self, value: Any, where: str) -> T:
        if not isinstance(value, self._item_type):
            kind = self._item_type.__name__
            raise ModuleDefinitionError(
                f"{type(self).__name__} {where} is a {type(value).__name__} ({value!r:.60}), not "
                f"a {kind}. A {type(self).__name__} holds {kind}s only"
                + (": wrap plain Python in a Module with a forward()." if kind == "Module"
                   else ": wrap the text as Parameter(value, description=...).")
            )
        return cast("T", value)

    def _checked_key(self, key: Any) -> str:
        if not isinstance(key, str) or not key or "." in key or hasattr(type(self), key):
            raise ModuleDefinitionError(
                f"{type(self).__name__} key {key!r} is not usable: keys are non-empty strings "
                "without '.' (they become names in state_dict()) that are not attributes of "
                f"{type(self).__name__}."
            )
        return key

    def __len__(self) -> int:
        return len(self._store())


class _ListItems(_Items[T]):
    """A list API (append, insert, pop, slicing, ...) over a registry keyed "0", "1", ..."""

    def _numbered(self) -> bool:
        return True

    def _renumber(self, items: list[tuple[str, T]], numbered: bool | None = None) -> None:
        if self._numbered() if numbered is None else numbered:
            self._replace_all((str(i), item) for i, (_, item) in enumerate(items))
        else:
            self._replace_all(items)

    def _position(self, index: int) -> int:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of "
                             f"length {size}")
        return index % size

    def _free_key(self) -> str:
        store = self._store()
        n = len(store)
        while str(n) in store:
            n += 1
        return str(n)

    def _new(self, items: list[tuple[str, T]]) -> Self:
        # A slice is the same container type holding the same items (names kept if named).
        other = type(self).__new__(type(self))
        Module.__init__(other)
        other._renumber(items, numbered=self._numbered())
        return other

    def append(self, item: T) -> Self:
        """Add ``item`` at the end."""
        item = self._checked(item, f"item {len(self)}")
        self._store()[self._free_key()] = item
        self._changed()
        return self

    def extend(self, items: Iterable[T]) -> Self:
        """Add ``items`` at the end."""
        for item in items:
            self.append(item)
        return self

    def insert(self, index: int, item: T) -> None:
        """Insert ``item`` before position ``index``."""
        item = self._checked(item, f"item {index}")
        entries = list(self._store().items())
        position = max(0, min(len(entries), index if index >= 0 else len(entries) + index))
        entries.insert(position, (self._free_key(), item))
        self._renumber(entries)

    def pop(self, index: int = -1) -> T:
        """Remove and return the item at ``index`` (the last by default)."""
        entries = list(self._store().items())
        _, item = entries.pop(self._position(index))
        self._renumber(entries)
        return item

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Self: ...
    def __getitem__(self, index: int | slice) -> T | Self:
        entries = list(self._store().items())
        if isinstance(index, slice):
            return self._new(entries[index])
        return entries[self._position(index)][1]

    def __setitem__(self, index: int, item: T) -> None:
        key = list(self._store())[self._position(index)]
        self._store()[key] = self._checked(item, f"item {index}")
        self._changed()

    def __delitem__(self, index: int | slice) -> None:
        entries = list(self._store().items())
        if isinstance(index, slice):
            del entries[index]
        else:
            del entries[self._position(index)]
        self._renumber(entries)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._store().values()))

    def __iadd__(self, items: Iterable[T]) -> Self:
        return self.extend(items)


class _DictItems(_Items[T]):
    """A dict API (update, pop, clear, keys, ...) over a registry keyed by name."""

    def __init__(self, items: Mapping[str, T] | Iterable[tuple[str, T]] | None = None) -> None:
        super().__init__()
        if items is not None:
            self.update(items)

    def update(self, items: Mapping[str, T] | Iterable[tuple[str, T]]) -> None:
        """Add or replace entries from a mapping or from ``(key, value)`` pairs."""
        pairs = cast("Iterable[Any]", items.items() if isinstance(items, Mapping) else items)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:  # pyright: ignore[reportUnknownArgumentType]
                raise ModuleDefinitionError(
                    f"{type(self).__name__}.update() element {i} is {pair!r:.60}, not a (key, "
                    "value) pair. Pass a mapping or an iterable of (key, value) pairs."
                )
            key, value = cast("tuple[Any, Any]", pair)
            self[key] = value

    def __setitem__(self, key: str, item: T) -> None:
        self._store()[self._checked_key(key)] = self._checked(item, f"entry {key!r}")
        self.__dict__.pop(key, None)
        self._changed()

    def __getitem__(self, key: str) -> T:
        return self._store()[key]

    def __delitem__(self, key: str) -> None:
        del self._store()[key]
        self._changed()

    def __contains__(self, key: object) -> bool:
        return key in self._store()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._store()))

    def keys(self) -> Iterable[str]:
        """The keys, in insertion order."""
        return self._store().keys()

    def items(self) -> Iterable[tuple[str, T]]:
        """``(key, value)`` pairs, in insertion order."""
        return self._store().items()

    def values(self) -> Iterable[T]:
        """The values, in insertion order."""
        return self._store().values()

    def pop(self, key: str) -> T:
        """Remove the entry ``key`` and return its value."""
        item = self._store().pop(key)
        self._changed()
        return item

    def clear(self) -> None:
        """Remove every entry."""
        self._store().clear()
        self._changed()


class Sequential(_ListItems[Module]):
    """Runs modules one after another, each on the previous one's output.

    Takes modules (named "0", "1", ...) or one ``OrderedDict``/mapping of named modules; the
    names are the keys in ``state_dict()``. Supports the list API of ``ModuleList``.

    Example:
        >>> chain = Sequential(LLMInference("fast", "Translate."), LLMInference("fast", "Fix."))
        >>> named = Sequential(OrderedDict([("translate", LLMInference("fast", "Translate."))]))
    """

    def __init__(self, *modules: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for key, module in modules[0].items():
                self._store()[self._checked_key(key)] = self._checked(module, f"entry {key!r}")
        else:
            for i, module in enumerate(modules):
                self._store()[str(i)] = self._checked(module, f"item {i}")
        self._changed()

    def _numbered(self) -> bool:
        # Named entries keep their names; numbered ones are renumbered, as in a list.
        return all(key.isdigit() for key in self._store())

    def forward(self, x: Any) -> Any:
        """Feed ``x`` through each module in order."""
        for module in self:
            x = module(x)
        return x


class ModuleList(_ListItems[Module]):
    """A list of modules, registered so their parameters and calls are found.

    Example:
        >>> self.views = ModuleList(Perspective(n) for n in ("lawyer", "engineer"))
    """

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Containers are not called; use their members."""
        raise NotImplementedError(
            "ModuleList has no forward(); iterate over it in your module's forward()."
        )


class ModuleDict(_DictItems[Module]):
    """A dict of modules, registered so their parameters and calls are found.

    Takes a mapping or ``(key, module)`` pairs.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Containers are not called; use their members."""
        raise NotImplementedError("ModuleDict has no forward(); index it in your forward().")


class ParameterList(_ListItems[Parameter]):
    """A list of Parameters, registered for ``parameters()`` and ``state_dict()``."""

    _registry = "_parameters"
    _item_type = Parameter

    def __init__(self, params: Iterable[Parameter] = ()) -> None:
        super().__init__()
        self.extend(params)


class ParameterDict(_DictItems[Parameter]):
    """A dict of Parameters, registered for ``parameters()`` and ``state_dict()``.

    Takes a mapping or ``(key, Parameter)`` pairs.
    """

    _registry = "_parameters"
    _item_type = Parameter
