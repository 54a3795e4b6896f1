"""Checking that a call's inputs fit forward(), and naming them, before tracing."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from plait.errors import InputError

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["check_call_fits", "positional_names"]


def positional_names(module: Module, num_args: int) -> list[str]:
    """Names of the input nodes for ``num_args`` positional inputs of ``module.forward``."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names.extend(f"{p.name}_{i}" for i in range(num_args))
            break
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_var = any(p.kind == p.VAR_POSITIONAL for p in params)
    if num_args > len(positional) and not has_var and params:
        raise InputError(
            f"{type(module).__name__}.forward({', '.join(p.name for p in positional)}) takes "
            f"{len(positional)} input(s) but got {num_args}. To run a batch, pass ONE list: "
            "pipeline([row1, row2, ...]); for several inputs per row make each row a tuple or "
            "a dict: pipeline([(a1, b1), (a2, b2)])."
        )
    return (names + [f"arg_{i}" for i in range(len(names), num_args)])[:num_args]


def check_call_fits(module: Module, num_args: int, kwarg_names: Sequence[str]) -> None:
    """Raise ``InputError`` unless forward() accepts these inputs."""
    # Without this, a missing input surfaces as a TypeError from forward() itself, reported
    # as a tracing failure at an unknown line.
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(num_args), **dict.fromkeys(kwarg_names))
    except TypeError as exc:
        name = type(module).__name__
        raise InputError(
            f"{name}.forward({', '.join(signature.parameters)}) cannot be called with "
            f"{num_args} positional input(s) "
            f"and keywords {sorted(kwarg_names)}: {exc}. Pass every input forward() needs, "
            f"e.g. {name.lower()}(...) with one value per parameter; for a batch pass ONE "
            "list of rows."
        ) from exc
