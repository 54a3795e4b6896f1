"""Stateless ops that work on real values and on traced values (graph nodes).

Inside forward(), values returned by modules are placeholders, so Python functions that need
the real text (``json.dumps``, ``str.join``, ``len``, ``.lower()`` on a value you built) cannot
run on them. These ops can: called on a traced value they record a node that runs on the real
value when the row executes; called on real values they just run. ``@op`` makes your own
module-level function behave the same way.

Conventions: plain arguments give plain results and failures raise ``FunctionalError``
(wrapped in ``NodeExecutionError`` with the node and source line when it happens in a run). A
``Value`` argument gives a ``Value`` result, and an ERROR Value argument is passed through
unchanged (see ``plait.values``); ``try_render`` is the one op that turns its own failure into
an ERROR Value.

==========  ===================================================================================
text        render, try_render, format, concat, join, strip, lower, upper, to_json, parse_json
structured  parse_structured, select, merge, coerce
numeric     add, sub, mul, div, sum, min, max, mean
response    extract_text, extract_meta, with_meta
values      valueify, unwrap, unwrap_or, is_error, map_values, zip_values, stack_structured
==========  ===================================================================================

Example:
    >>> import plait.functional as F
    >>> class Clean(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.llm = LLMInference(alias="fast")
    ...     def forward(self, text):
    ...         reply = self.llm(F.render("Summarize: {t}", t=text))
    ...         return F.lower(F.strip(reply))
"""

from plait.functional._numeric import add, div, max, mean, min, mul, sub, sum
from plait.functional._op import StaticArg, op
from plait.functional._structured import coerce, merge, parse_structured, select
from plait.functional._text import (
    concat,
    format,
    join,
    lower,
    parse_json,
    render,
    strip,
    to_json,
    try_render,
    upper,
)
from plait.functional._values import (
    extract_meta,
    extract_text,
    is_error,
    map_values,
    stack_structured,
    unwrap,
    unwrap_or,
    valueify,
    with_meta,
    zip_values,
)
from plait.values import Value, ValueKind

__all__ = [
    "StaticArg",
    "Value",
    "ValueKind",
    "add",
    "coerce",
    "concat",
    "div",
    "extract_meta",
    "extract_text",
    "format",
    "is_error",
    "join",
    "lower",
    "map_values",
    "max",
    "mean",
    "merge",
    "min",
    "mul",
    "op",
    "parse_json",
    "parse_structured",
    "render",
    "select",
    "stack_structured",
    "strip",
    "sub",
    "sum",
    "to_json",
    "try_render",
    "unwrap",
    "unwrap_or",
    "upper",
    "valueify",
    "with_meta",
    "zip_values",
]
