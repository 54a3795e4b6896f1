"""Record forward() as an InferenceGraph.

User modules are traced *through*: their forward() runs with proxies and whatever they call is
recorded, so nested modules at any depth flatten into one graph. Leaf modules (the tracer asks
``Tracer.is_leaf_module``, by default the module's ``leaf`` attribute) become nodes that run
on real values later; each records itself through ``Module.trace_leaf``.

forward() runs twice while tracing when it formats a traced value into a string: once with
short placeholders and once with long, differently spelled ones. The graph is accepted only if
both runs record the same graph (see ``plait.tracing.compare``). Leaf modules never run while
tracing, so only forward()'s own plain-Python side effects (a print) happen twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from plait.errors import PlaitError, TraceError
from plait.graph import FormatField, GraphNode, InferenceGraph, NodeKind, Ref, iter_refs
from plait.tracing.compare import check_same_graph, forward_location
from plait.tracing.context import (
    active_tracer,
    reset_active_tracer,
    set_active_tracer,
    user_source_location,
)
from plait.tracing.encoding import Encoding, compact, wide
from plait.tracing.errors import leak_error, wrap_user_error
from plait.tracing.guard import StringGuard
from plait.tracing.proxy import Proxy
from plait.tracing.signature import check_call_fits, positional_names
from plait.tracing.text import TracedText

if TYPE_CHECKING:
    from plait.module import Module
    from plait.parameter import Parameter

__all__ = ["Tracer", "trace"]

_LITERAL_TYPES = (str, int, float, bool, type(None))


class Tracer:
    """Records forward() of ``root`` into an ``InferenceGraph``.

    Args:
        root: The module whose forward() is traced.
        encoding: How placeholders are spelled in this trace (default: a fresh compact one).
    """

    def __init__(self, root: Module, encoding: Encoding | None = None) -> None:
        self.root = root
        self.encoding = encoding or compact()
        self.nodes: dict[str, GraphNode] = {}
        self._counts: dict[str, int] = {}
        self._sentinels: list[tuple[str, str, str, bool]] = []  # node, conversion, spec, is_text
        self._text_nodes: dict[tuple[str, str, str], str] = {}
        self._paths: dict[int, str] = {id(m): p for p, m in root.named_modules()}
        self._param_names: dict[int, str] = {id(p): n for n, p in root.named_parameters()}
        self._stack: list[str] = [""]
        self._second = False
        self._refused: TraceError | None = None
        self._guard = StringGuard(self.encoding.prefix, self.refuse)

    # --- entry point ----------------------------------------------------------------------
    def trace(self, num_args: int, kwarg_names: Sequence[str]) -> InferenceGraph:
        """Trace ``root.forward`` for ``num_args`` positional and the named keyword inputs.

        Raises:
            TraceError: forward() does something tracing cannot capture (named by line).
            InputError: The inputs do not fit forward()'s signature.
        """
        graph = self._trace_once(num_args, kwarg_names)
        if not self._sentinels:
            return graph  # no value was ever formatted into a string: nothing to look into
        second = type(self)(self.root, wide())
        second._second = True
        check_same_graph(self.root, graph, second._trace_once(num_args, kwarg_names))
        return graph

    def _trace_once(self, num_args: int, kwarg_names: Sequence[str]) -> InferenceGraph:
        names = positional_names(self.root, num_args)
        check_call_fits(self.root, num_args, kwarg_names)
        args = [self._input(name, i) for i, name in enumerate(names)]
        kwargs = {k: self._input(k, k) for k in kwarg_names}
        input_ids = list(self.nodes)
        token = set_active_tracer(self)
        try:
            try:
                if self.is_leaf_module(self.root):  # a leaf (e.g. an LLMInference) called alone
                    result = self.call_module(self.root, tuple(args), kwargs)
                else:
                    result = self._run_forward(self.root, args, kwargs)
            finally:
                self._guard.stop()
            if self._refused is not None:
                # forward() caught a refusal (`except Exception:`) and went on: the rest of
                # the trace was built on a decision about placeholder text.
                raise self._refused
            if result is None:
                raise TraceError(
                    f"{type(self.root).__name__}.forward() returned None. Return the value the "
                    "pipeline produces (e.g. `return self.llm(text)`)."
                )
            output = self.lift(result, where=f"the value returned by forward() of "
                               f"{type(self.root).__name__} (defined at "
                               f"{forward_location(self.root)})")
        finally:
            reset_active_tracer(token)
        return InferenceGraph(nodes=self.nodes, input_ids=input_ids, output=output)

    def refuse(self, error: TraceError) -> TraceError:
        """Remember ``error`` (the first one) so the trace fails even if forward() catches it."""
        if self._refused is None:
            self._refused = error
        return error

    # --- module calls -----------------------------------------------------------------------
    def is_leaf_module(self, module: Module) -> bool:
        """Whether ``module`` is recorded as nodes of its own instead of traced through."""
        return bool(module.leaf)

    def call_module(self, module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record a call of ``module`` made inside the traced forward()."""
        path = self._paths.get(id(module))
        if path is None:
            raise TraceError(
                f"{type(module).__name__} called at {user_source_location()} is not a submodule "
                f"of {type(self.root).__name__}. Assign it as an attribute in __init__ "
                "(self.step = ...) so plait can find it when the graph runs."
            )
        if self.is_leaf_module(module):
            return module.trace_leaf(self, path, args, kwargs)
        self._stack.append(path)
        try:
            return self._run_forward(module, list(args), kwargs)
        finally:
            self._stack.pop()

    def record_leaf(self, module: Module, path: str, kind: NodeKind, args: tuple[Any, ...],
                    kwargs: dict[str, Any], alias: str | None = None) -> Proxy:
        """One node running leaf ``module`` (at ``path``) on the real values of its inputs."""
        lifted = tuple(self.lift(a, where=f"an argument of '{path}'") for a in args)
        lifted_kw = {k: self.lift(v, where=f"argument {k!r} of '{path}'")
                     for k, v in kwargs.items()}
        return self.proxy(self.record(kind, path, lifted, lifted_kw, base=path,
                                      module_type=type(module).__name__, alias=alias))

    def _run_forward(self, module: Module, args: list[Any], kwargs: dict[str, Any]) -> Any:
        forward = module.forward
        if inspect.iscoroutinefunction(forward) or inspect.isasyncgenfunction(forward):
            raise TraceError(
                f"{type(module).__name__}.forward is `async def`. Write forward() as plain "
                "synchronous code without `await`: plait traces it and runs the calls "
                "concurrently for you."
            )
        try:
            return forward(*args, **kwargs)
        except PlaitError:
            raise
        except Exception as exc:
            raise wrap_user_error(module, exc, self._second) from exc

    # --- recording primitives -------------------------------------------------------------
    def record(
        self,
        kind: NodeKind,
        target: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        base: str,
        module_type: str | None = None,
        alias: str | None = None,
    ) -> str:
        """Add a node (arguments already lifted) and return its id."""
        node_id = self._fresh_id(base)
        deps = tuple(dict.fromkeys(r.node for r in iter_refs((args, kwargs))))
        creator = self._stack[-1]
        self.nodes[node_id] = GraphNode(
            id=node_id, kind=kind, target=target, args=args, kwargs=kwargs, deps=deps,
            module_path=creator,
            module_type=module_type or type(self.root.get_submodule(creator)).__name__,
            alias=alias, source=user_source_location(),
        )
        return node_id

    def proxy(self, node_id: str) -> Proxy:
        """The proxy standing for node ``node_id``'s value."""
        return Proxy(node_id, self)

    def text(self, node_id: str, conversion: str, spec: str, is_text: bool = False) -> TracedText:
        """The placeholder string for ``format(conversion(value of node_id), spec)``.

        ``is_text``: the node's value is known to be a ``str`` (a Parameter's value).
        """
        if active_tracer() is self:  # (a stale proxy formatted after its trace: no hook)
            self._guard.start()  # from the first placeholder on, str methods on them refused
        self._sentinels.append((node_id, conversion, spec, is_text))
        placeholder = self.encoding.placeholder(len(self._sentinels) - 1)
        return TracedText.make(self, placeholder, node_id, conversion, spec, is_text)

    def text_node(self, node_id: str, conversion: str, spec: str, is_text: bool) -> Proxy:
        """The proxy of ``format(conversion(value), spec)`` as a value (one node per form)."""
        if is_text and conversion in ("", "s") and not spec:
            return self.proxy(node_id)  # str(text) is the text itself
        key = (node_id, conversion, spec)
        existing = self._text_nodes.get(key)
        if existing is None:
            existing = self.record("format", (FormatField(0, conversion, spec),),
                                   (Ref(node_id),), {}, base="format")
            self._text_nodes[key] = existing
        return self.proxy(existing)

    def param_text(self, param: Parameter, conversion: str = "", spec: str = "") -> TracedText:
        """The placeholder string for a registered Parameter's value at run time."""
        return self.text(self._param_node(param), conversion, spec, True)

    def record_concat(self, left: Any, right: Any) -> Proxy:
        """``left + right`` where one side is traced: a format node of both."""
        parts = [self.lift(left, where="a `+` operand"), self.lift(right, where="a `+` operand")]
        segments: list[str | FormatField] = []
        refs: list[Ref] = []
        for part in parts:
            if isinstance(part, Ref):
                segments.append(FormatField(len(refs), "", ""))
                refs.append(part)
            elif isinstance(part, str):
                segments.append(part)
            else:
                raise TraceError(
                    f"Cannot add a {type(part).__name__} to a traced value at "
                    f"{user_source_location()}; only strings concatenate."
                )
        return self.proxy(self.record("format", tuple(segments), tuple(refs), {}, base="format"))

    def record_access(self, kind: NodeKind, proxy: Proxy, key: Any) -> Proxy:
        """``proxy[key]`` or ``proxy.key``."""
        lifted_key = self.lift(key, where="an index")
        if isinstance(lifted_key, Ref):
            raise TraceError(
                f"Cannot index with a traced value at {user_source_location()}; indices must "
                "be known while tracing. Use a @plait.functional.op function instead."
            )
        base = f"{proxy.node_id}.{key}" if kind == "getattr" else f"{proxy.node_id}[{key!r}]"
        return self.proxy(self.record(kind, lifted_key, (Ref(proxy.node_id),), {}, base=base))

    def record_method_call(
        self, proxy: Proxy, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Proxy:
        """``value.method(...)``: the getattr node that produced ``proxy`` becomes a call."""
        attr = self.nodes.get(proxy.node_id)
        if attr is None or attr.kind != "getattr":
            raise TraceError(
                f"Cannot call a traced value at {user_source_location()}: it is data, not a "
                "function."
            )
        del self.nodes[proxy.node_id]  # the bare attribute is never used on its own
        return self.record_method(self.proxy(attr.args[0].node), attr.target, args, kwargs)

    def record_method(self, value: Proxy, name: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Proxy:
        """``value.name(*args, **kwargs)``, run on the real value."""
        lifted = tuple(self.lift(a, where=f"an argument of .{name}()") for a in args)
        lifted_kw = {k: self.lift(v, where=f"argument {k!r} of .{name}()")
                     for k, v in kwargs.items()}
        return self.proxy(self.record("method", name, (Ref(value.node_id), *lifted), lifted_kw,
                                      base=f"{value.node_id}.{name}"))

    def record_call(self, target: str, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Proxy:
        """A ``plait.functional`` op called on traced values."""
        lifted = tuple(self.lift(a, where=f"an argument of {target}") for a in args)
        lifted_kw = {k: self.lift(v, where=f"argument {k!r} of {target}")
                     for k, v in kwargs.items()}
        name = getattr(fn, "__name__", "call")
        return self.proxy(self.record("call", target, lifted, lifted_kw, base=name))

    # --- lifting user values into graph arguments -----------------------------------------
    def lift(self, value: Any, *, where: str) -> Any:
        """Turn proxies, placeholder strings and Parameters into ``Ref``s; check literals."""
        if isinstance(value, Proxy):
            return Ref(value.node_id)
        if isinstance(value, str):
            return self._lift_string(value, where)
        from plait.parameter import Parameter

        if isinstance(value, Parameter):
            return Ref(self._param_node(value))
        if isinstance(value, list | tuple):
            items = [self.lift(v, where=where) for v in value]  # pyright: ignore[reportUnknownVariableType]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, Mapping):
            return {self._lift_key(k, where): self.lift(v, where=where)
                    for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
        if isinstance(value, slice):
            return self._lift_slice(cast("slice[Any, Any, Any]", value), where)
        if isinstance(value, BaseModel):
            if self.encoding.holds(value.model_dump()):
                raise TraceError(
                    f"{where} is a {type(value).__name__} built from a traced value while "
                    f"tracing (at {user_source_location()}): it would hold a placeholder, not "
                    "the real text. Build the model in a leaf module or an "
                    "@plait.functional.op function, or return a dict of the values."
                )
            return value
        if isinstance(value, _LITERAL_TYPES):
            return value
        raise TraceError(
            f"{where} is a {type(value).__name__}, which plait cannot carry through a graph "
            f"(at {user_source_location()}). Use strings, numbers, lists, dicts or pydantic "
            "models."
        )

    def _lift_key(self, key: Any, where: str) -> Any:
        if not isinstance(key, str):
            return key
        lifted = self._lift_string(key, where)
        if isinstance(lifted, Ref):
            raise TraceError(
                f"A dict key in {where} contains a traced value (at {user_source_location()}); "
                "keys must be known while tracing. Put the value in the dict's values instead."
            )
        return lifted

    def _lift_slice(self, value: slice[Any, Any, Any], where: str) -> slice[Any, Any, Any]:
        bounds = [self.lift(b, where=where) for b in (value.start, value.stop, value.step)]
        if any(isinstance(b, Ref) for b in bounds):
            raise TraceError(
                f"Cannot slice with a traced value at {user_source_location()}; slice bounds "
                "must be known while tracing. Use a @plait.functional.op function instead."
            )
        return slice(*bounds)

    def _lift_string(self, value: str, where: str) -> Any:
        text = str.__str__(value)  # a plain copy: TracedText traps len() and `in`
        segments: list[str | FormatField] = []
        refs: list[Ref] = []
        fields: list[tuple[str, str, str, bool]] = []
        for part in self.encoding.split(text):
            if isinstance(part, str):
                if self.encoding.leaked(part):
                    raise self.refuse(leak_error(where))
                segments.append(part)
            elif 0 <= part < len(self._sentinels):
                node_id, conversion, spec, is_text = self._sentinels[part]
                segments.append(FormatField(len(refs), conversion, spec))
                refs.append(Ref(node_id))
                fields.append((node_id, conversion, spec, is_text))
            else:
                raise self.refuse(leak_error(where))  # a placeholder whose number was changed
        if not refs:
            return text
        if len(segments) == 1:  # f"{x}" alone: the string form of x
            return Ref(self.text_node(*fields[0]).node_id)
        return Ref(self.record("format", tuple(segments), tuple(refs), {}, base="format"))

    def _param_node(self, param: Parameter) -> str:
        name = self._param_names.get(id(param))
        if name is None:
            raise TraceError(
                f"A Parameter used in forward() at {user_source_location()} is not registered "
                "on the module. Assign it as an attribute in __init__ (self.p = Parameter(...))."
            )
        node_id = f"param:{name}"
        if node_id not in self.nodes:
            self.nodes[node_id] = GraphNode(
                id=node_id, kind="param", target=name, module_path="", module_type="Parameter",
                source=user_source_location(),
            )
        return node_id

    # --- helpers ----------------------------------------------------------------------------
    def _input(self, name: str, key: int | str) -> Proxy:
        node_id = f"input:{name}"
        self.nodes[node_id] = GraphNode(id=node_id, kind="input", target=key,
                                        module_type=type(self.root).__name__, source="<input>")
        return self.proxy(node_id)

    def _fresh_id(self, base: str) -> str:
        # Unique even when a generated id equals another base: self.llm called twice gives
        # "llm" and "llm_1", and a child named "llm_1" then gets "llm_1_1", never a collision.
        base = base or "root"
        n = self._counts.get(base, 0)
        while True:
            candidate = base if n == 0 else f"{base}_{n}"
            n += 1
            if candidate not in self.nodes:
                self._counts[base] = n
                return candidate


def trace(module: Module, num_args: int = 1, kwarg_names: Sequence[str] = ()) -> InferenceGraph:
    """Trace ``module.forward`` into an ``InferenceGraph`` (uncached; see Module.graph_for).

    Example:
        >>> graph = trace(MyPipeline(), num_args=1)
        >>> print(graph.to_mermaid())
    """
    return Tracer(module).trace(num_args, kwarg_names)
