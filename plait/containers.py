"""Containers of modules and parameters, as in ``torch.nn``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, overload

from plait.module import Module
from plait.parameter import Parameter

__all__ = ["ModuleDict", "ModuleList", "ParameterDict", "ParameterList", "Sequential"]


class Sequential(Module):
    """Runs modules one after another, each on the previous one's output.

    Example:
        >>> chain = Sequential(LLMInference("fast", "Translate."), LLMInference("fast", "Fix."))
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def forward(self, x: Any) -> Any:
        """Feed ``x`` through each module in order."""
        for module in self.children():
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, index: int) -> Module:
        return list(self.children())[index]

    def __iter__(self) -> Iterator[Module]:
        return self.children()


class ModuleList(Module):
    """A list of modules, registered so their parameters and calls are found."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> None:
        """Add a module at the end."""
        setattr(self, str(len(self._children)), module)

    def extend(self, modules: Iterable[Module]) -> None:
        """Add modules at the end."""
        for module in modules:
            self.append(module)

    @overload
    def __getitem__(self, index: int) -> Module: ...
    @overload
    def __getitem__(self, index: slice) -> list[Module]: ...
    def __getitem__(self, index: int | slice) -> Module | list[Module]:
        return list(self.children())[index]

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Module]:
        return self.children()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Containers are not called; use their members."""
        raise NotImplementedError(
            "ModuleList has no forward(); iterate over it in your module's forward()."
        )


class ModuleDict(Module):
    """A dict of modules, registered so their parameters and calls are found."""

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        for key, module in (modules or {}).items():
            self[key] = module

    def __setitem__(self, key: str, module: Module) -> None:
        setattr(self, key, module)

    def __getitem__(self, key: str) -> Module:
        return self._children[key]

    def __contains__(self, key: object) -> bool:
        return key in self._children

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[str]:
        return iter(self._children)

    def keys(self) -> Iterable[str]:
        """The keys."""
        return self._children.keys()

    def items(self) -> Iterable[tuple[str, Module]]:
        """(key, module) pairs."""
        return self._children.items()

    def values(self) -> Iterable[Module]:
        """The modules."""
        return self._children.values()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Containers are not called; use their members."""
        raise NotImplementedError("ModuleDict has no forward(); index it in your forward().")


class ParameterList(Module):
    """A list of Parameters, registered for ``parameters()`` and ``state_dict()``."""

    def __init__(self, params: Iterable[Parameter] = ()) -> None:
        super().__init__()
        for param in params:
            self.append(param)

    def append(self, param: Parameter) -> None:
        """Add a Parameter at the end."""
        setattr(self, str(len(self._parameters)), param)

    def __getitem__(self, index: int) -> Parameter:
        return list(self._parameters.values())[index]

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._parameters.values())


class ParameterDict(Module):
    """A dict of Parameters, registered for ``parameters()`` and ``state_dict()``."""

    def __init__(self, params: Mapping[str, Parameter] | None = None) -> None:
        super().__init__()
        for key, param in (params or {}).items():
            self[key] = param

    def __setitem__(self, key: str, param: Parameter) -> None:
        setattr(self, key, param)

    def __getitem__(self, key: str) -> Parameter:
        return self._parameters[key]

    def __contains__(self, key: object) -> bool:
        return key in self._parameters

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[str]:
        return iter(self._parameters)

    def keys(self) -> Iterable[str]:
        """The keys."""
        return self._parameters.keys()

    def items(self) -> Iterable[tuple[str, Parameter]]:
        """(key, Parameter) pairs."""
        return self._parameters.items()
