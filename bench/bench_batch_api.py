"""Provider batch APIs: 10,000 rows x 2 levels, both levels batched (issue 12, part 2).

Usage: .venv/bin/python bench/bench_batch_api.py [--rows 10000] [--sync-rows 1000]
       [--delay 0.5] [--no-write]

For OpenAI (Batch API: JSONL upload, batch, polls, output file) and Anthropic (Message
Batches) in turn, a 2-level pipeline (draft, then judge) runs with ``batch=True`` against the
loopback server's batch emulation, whose batches end ``--delay`` seconds after creation.
Recorded per provider: HTTP requests the server saw (batch routes + synchronous chat), the
batches and items submitted, duplicates, wall time, and the run's cost at the price table's
batch prices. The same pipeline without ``batch`` on ``--sync-rows`` rows gives the
synchronous request count and cost per row for comparison.

The server runs in a thread of this process (its batch counters are read directly), so
driver and server share the CPU. The section is written at the end of bench/RESULTS.md
(``<!-- section:batch_api -->``), leaving the rest of the file as it is.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from common import RESULTS, header_lines, table

from plait import LLMInference, Module
from plait.resources.config import ProviderAPI
from plait.testing import LLMServer

MODELS: dict[str, str] = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
POLICY = {"linger": 0.5, "max_linger": 60.0, "poll_interval": 0.25}


class TwoLevels(Module):
    """Draft, then judge the draft: the second level needs the first's reply."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="draft", max_tokens=64)
        self.judge = LLMInference(alias="judge", max_tokens=64)

    def forward(self, text: str) -> str:
        return self.judge(f"Judge this draft: {self.draft(text)}")


def one_run(server: LLMServer, handle: Any, provider: ProviderAPI, rows: int,
            batch: bool) -> dict[str, Any]:
    model = MODELS[provider]
    resources = handle.resource_config({"draft": model, "judge": model}, provider_api=provider,
                                       batch=POLICY if batch else False, max_concurrent=64)
    server.reset_stats()
    module = TwoLevels().bind(resources=resources, progress=False)
    inputs = [f"Summarise document {i}: the quick brown fox, take {i}." for i in range(rows)]
    started = time.perf_counter()
    outputs = module.run_sync(inputs)
    wall = time.perf_counter() - started
    report = module.last_run
    assert report is not None and report.failed == 0 and len(outputs) == rows
    stats = server.batches.stats()
    chat = server.stats().total_requests
    return {"provider": provider, "mode": "batch" if batch else "sync", "rows": rows,
            "wall": wall, "http": stats.requests + chat, "chat": chat,
            "batches": stats.batches_created, "items": stats.items_submitted,
            "dups": stats.duplicate_custom_ids + stats.duplicate_bodies,
            "cost": report.cost_usd, "by_route": stats.requests_by_route}


def write(body: str) -> None:
    text = RESULTS.read_text()
    section = f"## Provider batch APIs (issue 12)\n<!-- section:batch_api -->\n\n{body.strip()}\n"
    pattern = re.compile(r"(?ms)^## [^\n]*\n<!-- section:batch_api -->.*?(?=^## |\Z)")
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section)
    RESULTS.write_text(text)
    print(f"\nwrote section 'batch_api' of {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sync-rows", type=int, default=1_000)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    server = LLMServer(record_requests=0)
    results: list[dict[str, Any]] = []
    with server.run_in_thread() as handle:
        server.batches.script(delay=args.delay)
        for provider in ("openai", "anthropic"):
            results.append(one_run(server, handle, provider, args.rows, batch=True))
            results.append(one_run(server, handle, provider, args.sync_rows, batch=False))
    body_rows = [(r["provider"], r["mode"], f"{r['rows']:,}", f"{2 * r['rows']:,}",
                  f"{r['http']:,}", f"{r['http'] / r['rows']:.4f}", r["batches"],
                  f"{r['items']:,}", r["dups"], f"{r['wall']:.1f}",
                  f"{r['cost'] / r['rows'] * 1e6:,.1f}") for r in results]
    verdicts: list[str] = []
    for provider in ("openai", "anthropic"):
        batch, sync = (r for r in results if r["provider"] == provider)
        ratio = (batch["cost"] / batch["rows"]) / (sync["cost"] / sync["rows"])
        verdicts.append(
            f"- {provider}: {batch['http']:,} HTTP requests for {2 * batch['rows']:,} calls "
            f"(target: a few hundred); {batch['dups']} duplicate submissions; cost per row "
            f"{ratio:.2f}x the synchronous run's; requests by route: {batch['by_route']}")
    body = "\n".join([
        *header_lines([
            f"- workload: {args.rows:,} rows x 2 levels (draft -> judge), both levels batched; "
            f"emulated batches end {args.delay:g} s after creation; policy {POLICY}; "
            f"synchronous comparison on {args.sync_rows:,} rows (max_concurrent=64)",
            "- server in a thread of the driver process (shared CPU); cost at the price "
            f"table's prices for {MODELS} (batch = half)"]),
        "",
        table(["provider", "mode", "rows", "calls", "HTTP requests", "requests / row",
               "batches", "items submitted", "duplicates", "wall s", "cost per 1M rows USD"],
              body_rows),
        "",
        *verdicts,
    ])
    print(body)
    if not args.no_write:
        write(body)


if __name__ == "__main__":
    main()
