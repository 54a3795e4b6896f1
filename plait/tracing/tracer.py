"""Record forward() as an InferenceGraph.

User modules are traced *through*: their forward() runs with proxies and whatever they call is
recorded, so nested modules at any depth flatten into one graph. Leaf modules (LLMInference,
and modules that set ``leaf = True``) become single nodes that run on real values later.
"""

from __future__ import annotations

import inspect
import itertools
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from plait.errors import InputError, PlaitError, TraceError
from plait.graph import FormatField, GraphNode, InferenceGraph, NodeKind, Ref, iter_refs
from plait.tracing.context import (
    reset_active_tracer,
    set_active_tracer,
    user_source_location,
)
from plait.tracing.proxy import SENTINEL_CHARS, Proxy

if TYPE_CHECKING:
    from plait.module import Module
    from plait.parameter import Parameter

__all__ = ["Tracer", "trace"]

_tracer_ids = itertools.count()
_LITERAL_TYPES = (str, int, float, bool, type(None))


class Tracer:
    """Records one forward() of ``root`` into an ``InferenceGraph``."""

    def __init__(self, root: Module) -> None:
        self.root = root
        self.uid = next(_tracer_ids)
        self.nodes: dict[str, GraphNode] = {}
        self._counts: dict[str, int] = {}
        self._sentinels: list[tuple[str, str, str]] = []
        self._paths: dict[int, str] = {id(m): p for p, m in root.named_modules()}
        self._param_names: dict[int, str] = {id(p): n for n, p in root.named_parameters()}
        self._stack: list[str] = [""]
        import re

        self._pattern = re.compile(f"\ue000{self.uid}:(\\d+)\ue001")

    # --- entry point ----------------------------------------------------------------------
    def trace(self, num_args: int, kwarg_names: Sequence[str]) -> InferenceGraph:
        """Trace ``root.forward`` for ``num_args`` positional and the named keyword inputs."""
        names = _positional_names(self.root, num_args)
        _check_call_fits(self.root, num_args, kwarg_names)
        args = [self._input(name, i) for i, name in enumerate(names)]
        kwargs = {k: self._input(k, k) for k in kwarg_names}
        input_ids = list(self.nodes)
        token = set_active_tracer(self)
        try:
            result = self._run_forward(self.root, args, kwargs)
        finally:
            reset_active_tracer(token)
        if result is None:
            raise TraceError(
                f"{type(self.root).__name__}.forward() returned None. Return the value the "
                "pipeline produces (e.g. `return self.llm(text)`)."
            )
        output = self.lift(result, where="the value returned by forward()")
        return InferenceGraph(nodes=self.nodes, input_ids=input_ids, output=output)

    # --- module calls -----------------------------------------------------------------------
    def call_module(self, module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record a call of ``module`` made inside the traced forward()."""
        path = self._paths.get(id(module))
        if path is None:
            raise TraceError(
                f"{type(module).__name__} called at {user_source_location()} is not a submodule "
                f"of {type(self.root).__name__}. Assign it as an attribute in __init__ "
                "(self.step = ...) so plait can find it when the graph runs."
            )
        from plait.llm import LLMInference

        if isinstance(module, LLMInference):
            return self._record_llm(module, path, args, kwargs)
        if getattr(module, "leaf", False):
            lifted_args = tuple(self.lift(a, where=f"an argument of {path}") for a in args)
            lifted_kwargs = {k: self.lift(v, where=f"argument {k!r} of {path}")
                             for k, v in kwargs.items()}
            return self._proxy(self.record("module", path, lifted_args, lifted_kwargs,
                                           base=path, module_type=type(module).__name__))
        self._stack.append(path)
        try:
            return self._run_forward(module, list(args), kwargs)
        finally:
            self._stack.pop()

    def _record_llm(
        self, module: Any, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Proxy:
        if kwargs.keys() - {"prompt"} or len(args) + len(kwargs) != 1:
            raise TraceError(
                f"LLMInference '{path}' takes exactly one prompt, called at "
                f"{user_source_location()} with {len(args)} positional and {sorted(kwargs)} "
                "keyword arguments. Build one string, e.g. self.llm(f\"{a}\\n{b}\")."
            )
        prompt = args[0] if args else kwargs["prompt"]
        lifted = self.lift(prompt, where=f"the prompt of '{path}'")
        if not isinstance(lifted, Ref | str):
            raise TraceError(
                f"LLMInference '{path}' got a {type(prompt).__name__} as prompt at "
                f"{user_source_location()}. Prompts are strings: format it, e.g. "
                "json.dumps(...) on real values or an f-string on traced values."
            )
        node_id = self.record("llm", path, (lifted,), {}, base=path,
                              module_type=type(module).__name__, alias=module.alias)
        return self._proxy(node_id)

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
            raise _wrap_user_error(module, exc) from exc

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

    def sentinel(self, node_id: str, conversion: str, spec: str) -> str:
        """A placeholder string standing for ``format(node value, spec)``."""
        self._sentinels.append((node_id, conversion, spec))
        return f"\ue000{self.uid}:{len(self._sentinels) - 1}\ue001"

    def param_sentinel(self, param: Parameter, conversion: str, spec: str) -> str:
        """A placeholder string standing for a registered Parameter's value at run time."""
        return self.sentinel(self._param_node(param), conversion, spec)

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
        return self._proxy(self.record("format", tuple(segments), tuple(refs), {}, base="format"))

    def record_access(self, kind: NodeKind, proxy: Proxy, key: Any) -> Proxy:
        """``proxy[key]`` or ``proxy.key``."""
        lifted_key = self.lift(key, where="an index")
        if isinstance(lifted_key, Ref):
            raise TraceError(
                f"Cannot index with a traced value at {user_source_location()}; indices must "
                "be known while tracing. Use a @plait.functional.op function instead."
            )
        base = f"{proxy.node_id}.{key}" if kind == "getattr" else f"{proxy.node_id}[{key!r}]"
        return self._proxy(self.record(kind, lifted_key, (Ref(proxy.node_id),), {}, base=base))

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
        lifted = tuple(self.lift(a, where=f"an argument of .{attr.target}()") for a in args)
        lifted_kw = {k: self.lift(v, where=f"argument {k!r} of .{attr.target}()")
                     for k, v in kwargs.items()}
        return self._proxy(self.record("method", attr.target, (attr.args[0], *lifted), lifted_kw,
                                       base=f"{attr.args[0].node}.{attr.target}"))

    def record_call(self, target: str, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Proxy:
        """A ``plait.functional`` op called on traced values."""
        lifted = tuple(self.lift(a, where=f"an argument of {target}") for a in args)
        lifted_kw = {k: self.lift(v, where=f"argument {k!r} of {target}")
                     for k, v in kwargs.items()}
        name = getattr(fn, "__name__", "call")
        return self._proxy(self.record("call", target, lifted, lifted_kw, base=name))

    # --- lifting user values into graph arguments -----------------------------------------
    def lift(self, value: Any, *, where: str) -> Any:
        """Turn proxies, sentinel strings and Parameters into ``Ref``s; check literals."""
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
            return {k: self.lift(v, where=where) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
        if isinstance(value, (*_LITERAL_TYPES, BaseModel)):
            return value
        raise TraceError(
            f"{where} is a {type(value).__name__}, which plait cannot carry through a graph "
            f"(at {user_source_location()}). Use strings, numbers, lists, dicts or pydantic "
            "models."
        )

    def _lift_string(self, text: str, where: str) -> Any:
        if not SENTINEL_CHARS.intersection(text):
            return text
        segments: list[str | FormatField] = []
        refs: list[Ref] = []
        pos = 0
        for match in self._pattern.finditer(text):
            if match.start() > pos:
                segments.append(text[pos:match.start()])
            node_id, conversion, spec = self._sentinels[int(match.group(1))]
            segments.append(FormatField(len(refs), conversion, spec))
            refs.append(Ref(node_id))
            pos = match.end()
        if pos < len(text):
            segments.append(text[pos:])
        if any(isinstance(s, str) and SENTINEL_CHARS.intersection(s) for s in segments):
            raise TraceError(
                f"{where} contains a traced value that was cut or changed as a string (at "
                f"{user_source_location()}), or one kept from an earlier trace. Slice or edit "
                "the real value in a @plait.functional.op function instead."
            )
        if len(segments) == 1 and isinstance(segments[0], FormatField) and not (
            segments[0].conversion or segments[0].spec
        ):
            return refs[0]  # f"{x}" alone is just x (as a string at run time)
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
        return self._proxy(node_id)

    def _proxy(self, node_id: str) -> Proxy:
        return Proxy(node_id, self)

    def _fresh_id(self, base: str) -> str:
        base = base or "root"
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


def trace(module: Module, num_args: int = 1, kwarg_names: Sequence[str] = ()) -> InferenceGraph:
    """Trace ``module.forward`` into an ``InferenceGraph`` (uncached; see Module.graph_for).

    Example:
        >>> graph = trace(MyPipeline(), num_args=1)
        >>> print(graph.to_mermaid())
    """
    return Tracer(module).trace(num_args, kwarg_names)


def _positional_names(module: Module, num_args: int) -> list[str]:
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


def _check_call_fits(module: Module, num_args: int, kwarg_names: Sequence[str]) -> None:
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


def _wrap_user_error(module: Module, exc: Exception) -> TraceError:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/plait/" not in f.filename]
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    hint = (
        "While tracing, values returned by modules are placeholders, not strings: Python "
        "functions that need the real text (str.join, json.dumps, len, slicing, int(...)) "
        "cannot run on them. Use f-strings or `+` to build prompts, index structured outputs "
        "with [..] or .field, and put other processing in a @plait.functional.op function or "
        "a leaf module (leaf = True)."
    )
    return TraceError(
        f"{type(module).__name__}.forward() failed while tracing at {where}: "
        f"{type(exc).__name__}: {exc}. {hint}"
    )
