"""``Module``: the base class of every pipeline step, shaped like ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

from plait.errors import ConfigError, ModuleDefinitionError
from plait.parameter import Parameter
from plait.tracing.context import active_tracer

if TYPE_CHECKING:
    from plait.graph import InferenceGraph
    from plait.optim.backward import BackwardContext, InputFeedback
    from plait.tracing.tracer import Tracer

__all__ = ["Module"]


class Module:
    """Base class for pipeline steps. Subclass it and write ``forward()``.

    Modules and Parameters assigned as attributes are registered, as in PyTorch. Calling a
    module inside another module's forward() records it in the traced graph; calling the
    top-level module runs the graph (``await pipeline(x)``, ``pipeline.run_sync(x)``).

    Set the class attribute ``leaf = True`` to make a module a single graph node whose
    forward() runs on real values (for plain-Python processing between LLM calls).

    Example:
        >>> class Summarize(Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.llm = LLMInference(alias="fast", system_prompt="Summarize.")
        ...     def forward(self, text: str) -> str:
        ...         return self.llm(text)
        >>> pipeline = Summarize().bind(resources=resources)
        >>> summary = await pipeline("Some long text ...")
    """

    leaf: bool = False

    def trace_leaf(
        self, tracer: Tracer, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Record a call of this leaf module (``leaf = True``) while forward() is traced.

        The default records one ``module`` node whose forward() runs on the real values when
        the row executes. A leaf with other needs overrides this (``LLMInference`` records an
        ``llm`` node); the tracer never needs to know the concrete class.

        Args:
            tracer: The active tracer (``tracer.record_leaf`` adds the node).
            path: This module's dotted path in the traced root.
            args: Positional arguments of the call (proxies, placeholder strings, literals).
            kwargs: Keyword arguments of the call.

        Returns:
            The proxy standing for the call's result.
        """
        return tracer.record_leaf(self, path, "module", args, kwargs)

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "training", False)  # eval until train(): nothing recorded
        object.__setattr__(self, "_bound", None)
        object.__setattr__(self, "_graph_cache", {})
        object.__setattr__(self, "_structure_version", 0)

    # --- registration ---------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_children" not in self.__dict__:
            raise ModuleDefinitionError(
                f"{type(self).__name__}.__init__ assigned self.{name} before calling "
                "super().__init__(). Call super().__init__() first in __init__."
            )
        children: dict[str, Module] = self.__dict__["_children"]
        params: dict[str, Parameter] = self.__dict__["_parameters"]
        if isinstance(value, Module) and "_children" not in value.__dict__:
            raise ModuleDefinitionError(
                f"{type(value).__name__}.__init__ did not call super().__init__(). "
                "Add super().__init__() at the top of its __init__."
            )
        # Replacing a child keeps its place (as in torch): only the other registry is cleared.
        if not isinstance(value, Module):
            children.pop(name, None)
        if not isinstance(value, Parameter):
            params.pop(name, None)
        if isinstance(value, Module):
            children[name] = value
            self.__dict__.pop(name, None)
        elif isinstance(value, Parameter):
            params[name] = value
            self.__dict__.pop(name, None)
        else:
            object.__setattr__(self, name, value)
        self._changed()

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if "_children" not in d:
            if name.startswith("__"):
                raise AttributeError(name)
            raise ModuleDefinitionError(
                f"{type(self).__name__} has no attribute {name!r} because its __init__ did not "
                "call super().__init__(). Add super().__init__() at the top of __init__."
            )
        if name in d["_children"]:
            return d["_children"][name]
        if name in d["_parameters"]:
            return d["_parameters"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        """Attributes, plus children and Parameters reachable as attributes (as in torch)."""
        names = set(super().__dir__())
        d = self.__dict__
        names.update(k for k in (*d.get("_children", ()), *d.get("_parameters", ()))
                     if k.isidentifier())
        return sorted(names)

    def __delattr__(self, name: str) -> None:
        if name in self._children:
            del self._children[name]
        elif name in self._parameters:
            del self._parameters[name]
        else:
            object.__delattr__(self, name)
        self._changed()

    def _changed(self) -> None:
        # Any attribute change may change what forward() traces to; graphs are re-traced.
        self.__dict__["_structure_version"] = self.__dict__.get("_structure_version", 0) + 1
        self.__dict__["_graph_cache"] = {}

    def register_module(self, name: str, module: Module) -> None:
        """Register ``module`` as a child under ``name`` (same as assigning the attribute)."""
        setattr(self, name, module)

    def register_parameter(self, name: str, param: Parameter) -> None:
        """Register ``param`` under ``name`` (same as assigning the attribute)."""
        setattr(self, name, param)

    # --- traversal --------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct children with their attribute names."""
        yield from self._children.items()

    def children(self) -> Iterator[Module]:
        """Direct children."""
        yield from self._children.values()

    def named_modules(
        self, memo: set[int] | None = None, prefix: str = ""
    ) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, with dotted paths ("" for this one)."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant."""
        for _, module in self.named_modules():
            yield module

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Parameters with dotted names; a Parameter shared by two modules is listed once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix) if recurse else iter([(prefix, self)])
        for path, module in modules:
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{path}.{name}" if path else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every Parameter (learnable or not) of this module and its descendants."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def get_submodule(self, target: str) -> Module:
        """The descendant at dotted path ``target`` ("" is this module)."""
        module: Module = self
        for part in target.split(".") if target else []:
            child = module._children.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} "
                                     f"(looking up {target!r})")
            module = child
        return module

    def get_parameter(self, target: str) -> Parameter:
        """The Parameter at dotted path ``target``."""
        path, _, name = target.rpartition(".")
        module = self.get_submodule(path)
        if name not in module._parameters:
            raise AttributeError(f"{type(module).__name__} has no parameter {name!r}")
        return module._parameters[name]

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, str]:
        """Every Parameter's value by dotted name.

        A Parameter shared by several modules appears once, under its first name (as in
        ``named_parameters``), so loading a state can never set it twice to different values.
        """
        return {name: param.value for name, param in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, str], strict: bool = True) -> None:
        """Set Parameter values from ``state``.

        Raises:
            ConfigError: With ``strict``, if any key is missing or unknown (all are listed).
        """
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unknown = sorted(set(state) - set(own))
        if strict and (missing or unknown):
            raise ConfigError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, unknown "
                f"keys {unknown}. Valid keys: {sorted(own)}. Pass strict=False to load the "
                "matching keys only."
            )
        for key, value in state.items():
            if key in own:
                if not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                    raise ConfigError(f"state_dict[{key!r}] must be a string, got {value!r}.")
                self.get_parameter(key).value = value

    def train(self, mode: bool = True) -> Self:
        """Training mode: forward passes record what backward() needs."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Self:
        """Evaluation mode: nothing is recorded for backward()."""
        return self.train(False)

    # --- forward / execution ----------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Define the computation. Override in subclasses."""
        raise NotImplementedError(
            f"{type(self).__name__} must define forward(self, ...). It is called with the "
            "pipeline inputs and returns the output built from submodule calls."
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Record the call while tracing; otherwise run it.

        From synchronous code (no running event loop), a module that is not bound and makes
        no LLM call returns its result at once. Every other call returns a ``PendingCall``
        to ``await`` (or ``asyncio.run``, or ``async for`` to stream). A list is a batch
        unless forward()'s input is annotated as a list; ``Batch(rows)`` is always a batch.
        """
        tracer = active_tracer()
        if tracer is not None:
            return tracer.call_module(self, args, kwargs)
        from plait.execution.call import call_module

        return call_module(self, args, kwargs)

    def bind(self, resources: Any = None, **settings: Any) -> Self:
        """Attach resources and execution settings to this module; returns the module.

        Calling ``bind`` again adds to (and overrides) what was bound before.

        Args:
            resources: A ``ResourceConfig`` (or a path to its YAML).
            **settings: Any ``ExecutionSettings`` field (``executor``, ``max_inflight``,
                ``checkpoint_dir``, ...). Call kwargs override these.
        """
        from plait.execution.settings import ExecutionSettings, normalize

        ExecutionSettings.check_keys(settings)
        bound = dict(self.__dict__.get("_bound") or {}) | settings
        if resources is not None:
            bound["resources"] = resources
        # Checked now, so a wrong value fails at bind() rather than at the first call.
        object.__setattr__(self, "_bound", normalize(bound))
        return self

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        """Run synchronously (scripts, notebooks); works inside a running event loop too.

        Raises:
            CallError: When called from a leaf module's forward() that itself runs under
                ``run_sync`` (it would wait for itself); make that forward ``async def``
                and ``await`` the call instead.
        """
        from plait.execution.call import run_sync

        return run_sync(self, args, kwargs)

    async def backward(self, feedback: str, ctx: BackwardContext) -> InputFeedback:
        """Turn feedback on this module's output into feedback for its inputs.

        Called by ``loss.backward()`` for leaf modules and LLM calls (other modules are
        inlined in the graph). The default passes the feedback to every input unchanged.

        Args:
            feedback: Feedback on the output of this call.
            ctx: The call's inputs, output, graph node and the optional backward LLM; use
                ``ctx.add_parameter_feedback(param, text)`` to give feedback to a Parameter.

        Returns:
            One feedback for every input (str), a mapping from positional index or keyword
            name to feedback, or None to stop propagation here.
        """
        return feedback

    def graph_for(self, num_args: int, kwarg_names: tuple[str, ...] = ()) -> InferenceGraph:
        """The traced graph for this input shape, traced once and cached."""
        from plait.tracing.cache_key import graph_key

        # Anything in the tree that can change the trace is in the key: each module's
        # attribute assignments (version), train()/eval(), and its plain data attributes even
        # when changed in place (see plait.tracing.cache_key). Parameter values are not: a
        # graph reads them through `param` nodes when each row runs, so it never holds one.
        # One graph per input shape: a changed state replaces it (the cache stays bounded
        # when, say, a list attribute grows call after call).
        state = graph_key(self)
        cache: dict[Any, tuple[Any, InferenceGraph]] = self.__dict__["_graph_cache"]
        cached = cache.get((num_args, kwarg_names))
        if cached is not None and cached[0] == state:
            return cached[1]
        from plait.tracing.tracer import Tracer

        graph = Tracer(self).trace(num_args, kwarg_names)
        cache[(num_args, kwarg_names)] = (state, graph)
        return graph

    # --- pickling (Ray ships modules to workers) --------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_bound"] = None  # settings hold callbacks and clients' configs: not shipped
        state["_graph_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, child in self._children.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        if len(lines) == 1:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines.append(")")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        """Extra text for ``repr`` (override like in PyTorch)."""
        return ""
