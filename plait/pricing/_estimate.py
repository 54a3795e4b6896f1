"""``estimate(pipeline, source)``: requests, tokens and cost of a run before paying for it.

Two parts, each labelled in the result:

* **First graph level** (LLM calls whose prompt depends on no other LLM call): every row's
  real prompt is built by running the graph up to those calls with a router that records
  the request and stops the row, so no request is sent. Input tokens are counted from
  those prompts by the stated approximation (~4 characters per token; plait ships no
  tokenizer). Output tokens come from the sample run (below), or ``max_tokens`` without one.
* **Everything after it** is extrapolated from a small real sample run of the first
  ``sample_rows`` rows: each node's mean input and output tokens (as the provider reported
  them) times the number of rows. The sample is paid for (its cost is reported).

Costs are shown for synchronous requests and for the providers' Batch APIs (half price).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plait.clients.base import LLMRequest, Usage
from plait.errors import ConfigError, NodeExecutionError
from plait.pricing._cost import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    endpoint_price,
    estimate_tokens,
)
from plait.pricing._table import PRICES_AS_OF

if TYPE_CHECKING:
    from plait.execution.contract import Row
    from plait.graph import InferenceGraph
    from plait.module import Module

__all__ = ["Estimate", "NodeEstimate", "aestimate", "estimate"]


@dataclass(frozen=True)
class NodeEstimate:
    """One LLM node's share of a run.

    Attributes:
        node_id: The graph node.
        alias: Its endpoint alias.
        model: The endpoint's model.
        requests: Calls it makes over the whole run.
        input_tokens: Input tokens over the whole run.
        output_tokens: Output tokens over the whole run.
        sync_usd: Cost with synchronous requests.
        batch_usd: Cost through the provider's Batch API.
        basis: How it was estimated (real prompts, sample, bound).
        price_source: Where the price comes from.
    """

    node_id: str
    alias: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    sync_usd: float
    batch_usd: float
    basis: str
    price_source: str


@dataclass(frozen=True)
class Estimate:
    """The priced plan of a run (``plait run --estimate`` prints ``format()``).

    Attributes:
        pipeline: The pipeline's class name.
        rows: Rows in the source.
        nodes: Per LLM node.
        sample_rows: Rows run for real to extrapolate from (0: none).
        sample_usd: What the sample run cost.
        sample_requests: Requests the sample run sent.
        dry_run_failures: Rows whose graph failed before reaching an LLM call.
    """

    pipeline: str
    rows: int
    nodes: list[NodeEstimate] = field(default_factory=list[NodeEstimate])
    sample_rows: int = 0
    sample_usd: float = 0.0
    sample_requests: int = 0
    dry_run_failures: int = 0

    @property
    def requests(self) -> int:
        """Requests over the whole run."""
        return sum(n.requests for n in self.nodes)

    @property
    def input_tokens(self) -> int:
        """Input tokens over the whole run."""
        return sum(n.input_tokens for n in self.nodes)

    @property
    def output_tokens(self) -> int:
        """Output tokens over the whole run."""
        return sum(n.output_tokens for n in self.nodes)

    @property
    def sync_usd(self) -> float:
        """Cost with synchronous requests."""
        return sum(n.sync_usd for n in self.nodes)

    @property
    def batch_usd(self) -> float:
        """Cost through the providers' Batch APIs."""
        return sum(n.batch_usd for n in self.nodes)

    def format(self) -> str:
        """A table for people, with the basis of every figure."""
        head = (f"Estimate for {self.pipeline} over {self.rows:,} rows (tokens: ~"
                f"{CHARS_PER_TOKEN} characters per token, an approximation; prices: plait's "
                f"table as of {PRICES_AS_OF} unless the endpoint sets its own, verify at the "
                "provider's pricing page)")
        lines = [head, "",
                 f"{'node':<18} {'alias':<8} {'model':<20} {'requests':>10} {'input tok':>13} "
                 f"{'output tok':>12} {'sync $':>11} {'batch $':>11}  basis"]
        for n in self.nodes:
            lines.append(f"{n.node_id[:18]:<18} {n.alias[:8]:<8} {n.model[:20]:<20} "
                         f"{n.requests:>10,} {n.input_tokens:>13,} {n.output_tokens:>12,} "
                         f"{n.sync_usd:>11.4f} {n.batch_usd:>11.4f}  {n.basis}")
        lines.append(f"{'total':<48} {self.requests:>10,} {self.input_tokens:>13,} "
                     f"{self.output_tokens:>12,} {self.sync_usd:>11.4f} {self.batch_usd:>11.4f}")
        if self.sample_rows:
            lines.append(f"sample run: {self.sample_rows:,} rows, {self.sample_requests:,} "
                         f"requests, ${self.sample_usd:.4f} spent")
        if self.dry_run_failures:
            lines.append(f"{self.dry_run_failures:,} rows failed before their first LLM call "
                         "in the dry run (not counted)")
        unpriced = sorted({n.alias for n in self.nodes if n.price_source.startswith("none")})
        if unpriced:
            lines.append(f"no price known for {unpriced}: set input_cost_per_1m / "
                         "output_cost_per_1m on those endpoints")
        return "\n".join(lines)


class _Stop(Exception):
    """Ends a dry-run row at its first LLM call (nothing is sent)."""


class _RecordingRouter:
    def __init__(self) -> None:
        self.requests: dict[str, LLMRequest] = {}

    async def complete(self, alias: str, request: LLMRequest, *, parse: Any, node_id: str,
                       row: int | None) -> tuple[Any, Usage]:
        self.requests[node_id] = request
        raise _Stop


def estimate(pipeline: Module, source: Any, *, resources: Any = None,
             columns: Mapping[str, str] | None = None, sample_rows: int = 10,
             timeout_s: float = 600.0) -> Estimate:
    """Price a run of ``pipeline`` over ``source`` (see the module docstring).

    Args:
        pipeline: The pipeline.
        source: A list of rows (as for ``pipeline([...])``), or a dataset source
            (Parquet/CSV/JSON-lines path, list of dicts) as for ``run_dataset``.
        resources: Endpoints (default: the pipeline's bound resources).
        columns: forward() argument -> column, for dataset sources.
        sample_rows: Rows to run for real (paid) to extrapolate calls after the first
            level and output lengths; 0 runs nothing and uses max_tokens as the bound.
        timeout_s: Bound on the sample run.

    Returns:
        The estimate; ``print(est.format())`` shows it.

    Example:
        >>> est = estimate(pipeline, "reviews.parquet", sample_rows=20)  # doctest: +SKIP
        >>> print(est.format())  # doctest: +SKIP
    """
    return asyncio.run(aestimate(pipeline, source, resources=resources, columns=columns,
                                 sample_rows=sample_rows, timeout_s=timeout_s))


async def aestimate(pipeline: Module, source: Any, *, resources: Any = None,
                    columns: Mapping[str, str] | None = None, sample_rows: int = 10,
                    timeout_s: float = 600.0) -> Estimate:
    """``estimate`` for async code (Jupyter, a running event loop)."""
    if sample_rows < 0:
        raise ConfigError(f"sample_rows must be >= 0, got {sample_rows}.")
    return await _estimate(pipeline, source, resources, columns, sample_rows, timeout_s)


def _rows(pipeline: Module, source: Any, columns: Mapping[str, str] | None
          ) -> tuple[InferenceGraph, Iterator[Row]]:
    items: list[Any] | None = (list(source) if isinstance(source, list | tuple)  # pyright: ignore[reportUnknownArgumentType]
                               else None)
    if items is not None and not any(isinstance(r, Mapping) for r in items):
        from plait.execution.inputs import Batch, split_inputs

        inputs = split_inputs(pipeline, (Batch(items),), {})
        return pipeline.graph_for(*inputs.shape), iter(inputs.rows)
    from plait.io._inputs import chunk_rows, resolve_columns
    from plait.io._source import iter_chunks, open_source

    src = open_source(source)
    mapping = resolve_columns(pipeline, src.column_names(), columns)
    graph = pipeline.graph_for(0, tuple(sorted(mapping)))

    def rows() -> Iterator[Row]:
        for chunk in iter_chunks(src.batches(1000), 1000, []):
            yield from chunk_rows(chunk, mapping)

    return graph, rows()


async def _estimate(pipeline: Module, source: Any, resources: Any,
                    columns: Mapping[str, str] | None, sample_rows: int,
                    timeout_s: float) -> Estimate:
    from plait.execution.interpreter import Interpreter
    from plait.execution.settings import resolve_settings

    settings, _ = resolve_settings({} if resources is None else {"resources": resources},
                                   pipeline.__dict__.get("_bound"))
    graph, rows = _rows(pipeline, source, columns)
    recorder = _RecordingRouter()
    interp = Interpreter(graph, pipeline, recorder)
    first: dict[str, int] = {}  # node -> input tokens of its real prompts, all rows
    sample: list[Row] = []
    count = failures = 0
    for row in rows:
        count += 1
        if len(sample) < sample_rows:
            sample.append(row)
        recorder.requests.clear()
        try:
            await interp.run_row(row[1], row[2], row=row[0])
        except NodeExecutionError as exc:
            if not isinstance(exc.__cause__, _Stop):
                failures += 1
        except Exception:
            failures += 1
        for node_id, request in recorder.requests.items():
            tokens = estimate_tokens(request.system_prompt) + estimate_tokens(request.prompt)
            first[node_id] = first.get(node_id, 0) + tokens
    measured = (await asyncio.wait_for(_sample(pipeline, graph, sample, settings), timeout_s)
                if sample else _Sample())
    return _combine(pipeline, graph, settings.resources, count, first, measured, failures)


@dataclass
class _Sample:
    rows: int = 0
    # node -> [calls, input tokens, output tokens]
    calls: dict[str, list[int]] = field(default_factory=dict[str, list[int]])
    cost: float = 0.0
    requests: int = 0


async def _sample(pipeline: Module, graph: InferenceGraph, rows: list[Row],
                  settings: Any) -> _Sample:
    from plait.execution.contract import Job
    from plait.execution.local import LocalExecutor

    out = _Sample(rows=len(rows))

    def on_node(_row: int, node_id: str, _value: Any, usage: Usage | None) -> None:
        entry = out.calls.setdefault(node_id, [0, 0, 0])
        entry[0] += 1
        if usage is not None:
            entry[1] += usage.input_tokens
            entry[2] += usage.output_tokens

    executor = LocalExecutor()
    job = Job(module=pipeline, graph=graph, rows=rows, settings=settings, on_node=on_node)
    async for result in executor.execute(job):
        out.cost += result.cost_usd
    out.requests = sum(int(s.get("requests", 0)) for s in executor.endpoint_stats().values())
    return out


def _combine(pipeline: Module, graph: InferenceGraph, resources: Any, rows: int,
             first: dict[str, int], sample: _Sample, failures: int) -> Estimate:
    nodes: list[NodeEstimate] = []
    for node in graph.llm_nodes():
        alias = node.alias or ""
        config = resources.get(alias)
        price = endpoint_price(config)
        module: Any = pipeline.get_submodule(node.target)
        cap = int(getattr(module, "max_tokens", None) or DEFAULT_OUTPUT_TOKENS)
        seen = sample.calls.get(node.id)
        if node.id in first:
            tokens_in = first[node.id]
            if seen and seen[0]:
                tokens_out = round(seen[2] / seen[0] * rows)
                basis = f"real prompts; output from a {sample.rows}-row sample"
            else:
                tokens_out = cap * rows
                basis = "real prompts; output = max_tokens (no sample)"
        elif seen and seen[0]:
            tokens_in = round(seen[1] / seen[0] * rows)
            tokens_out = round(seen[2] / seen[0] * rows)
            basis = f"extrapolated from a {sample.rows}-row sample"
        else:
            tokens_in = (estimate_tokens(module.system_prompt.value) + cap) * rows
            tokens_out = cap * rows
            basis = "bound: no sample reached it"
        nodes.append(NodeEstimate(
            node.id, alias, str(getattr(config, "model", "")), rows, tokens_in, tokens_out,
            price.cost(tokens_in, tokens_out), price.cost(tokens_in, tokens_out, batch=True),
            basis, price.source))
    return Estimate(type(pipeline).__name__, rows, nodes, sample.rows, sample.cost,
                    sample.requests, failures)
