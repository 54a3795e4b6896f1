r"""``plait-testing-server``: the loopback LLM server from the command line.

Prints one JSON line ``{"base_url": ..., "openai_base_url": ..., "anthropic_base_url": ...,
"pid": ...}`` once it listens, then serves until SIGINT or SIGTERM. Change its behaviour
while it runs with ``POST /_control`` (same names as ``ServerConfig``); read counters with
``GET /_stats``.

Example:
    plait-testing-server --port 8000 --latency 0.05 --rate-limit model-a=100 \
        --max-concurrency 64 --fault 500:every=10 --fault 429:probability=0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from plait.errors import ConfigError
from plait.testing._config import Fault, ServerConfig
from plait.testing.server import LLMServer

__all__ = ["build_parser", "config_from_args", "main"]

_EPILOG = """\
values given per model take MODEL=VALUE and may repeat; MODEL '*' means all requests
together; a bare VALUE is the same as '*=VALUE' (or the default, for --latency).

fault specs are KIND[:key=value,...] with KIND one of 429 500 503 400 malformed
empty_choices truncated hang close, and keys model, match, every, probability, times,
retry_after, hang_seconds. A fault without every/probability fires once.
  --fault 429:retry_after=2          the next request gets a 429 (retry-after: 2)
  --fault 500:every=10               every 10th request, forever
  --fault hang:model=slow,times=3    the next 3 requests to model 'slow' hang

runtime control: curl -XPOST BASE/_control -d '{"latency": 0.2, "faults": ["500"]}'
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (documents every flag in ``--help``)."""
    p = argparse.ArgumentParser(
        prog="plait-testing-server",
        description="Offline OpenAI/Anthropic-compatible LLM server for tests and benchmarks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    p.add_argument("--config", default=None,
                   help="JSON object of ServerConfig settings; the flags below override it")
    p.add_argument("--latency", action="append", metavar="[MODEL=]SECONDS",
                   help="seconds before each reply")
    p.add_argument("--jitter", type=float, default=None, metavar="SECONDS",
                   help="extra latency, uniform in [0, SECONDS]")
    p.add_argument("--rate-limit", action="append", metavar="[MODEL=]RPS",
                   help="requests per second; beyond it 429 (see --retry-hint)")
    p.add_argument("--rate-burst", type=float, default=None, metavar="N",
                   help="token-bucket capacity (default: one second's worth)")
    p.add_argument("--max-concurrency", action="append", metavar="[MODEL=]N",
                   help="requests in flight at once; beyond it 429")
    p.add_argument("--retry-hint", default=None, choices=["both", "seconds", "ms", "none"],
                   help="how a 429 states its wait: both headers (default, OpenAI), "
                        "whole-second retry-after only (Anthropic), retry-after-ms only, none")
    p.add_argument("--fault", action="append", metavar="KIND[:k=v,...]",
                   help="scripted failure, in order (see below)")
    p.add_argument("--seed", type=int, default=None, help="seed of jitter and random faults")
    p.add_argument("--require-api-key", default=None, metavar="KEY",
                   help="answer 401 unless this key is sent")
    p.add_argument("--record", type=int, default=None, metavar="N",
                   help="how many request bodies GET /_requests keeps (default 1000)")
    p.add_argument("--responder", default=None, metavar="MODULE:FUNCTION",
                   help="fn(ChatRequest) -> str giving the reply text")
    return p


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"Expected a number, got {text!r}.") from None


def _per_model(values: Sequence[str], *, bare_key: str) -> float | dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        model, sep, value = item.rpartition("=")
        out[model if sep else bare_key] = _number(value)
    if list(out) == [bare_key]:
        return out[bare_key]
    return out


def _fault(spec: str) -> Fault:
    kind, _, rest = spec.partition(":")
    fields: dict[str, Any] = {"kind": kind}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"Fault option {pair!r} in {spec!r} must look like key=value.")
        if key in ("model", "match"):
            fields[key] = value
        elif key in ("every", "times"):
            fields[key] = int(_number(value))
        else:
            fields[key] = _number(value)
    return Fault.from_dict(fields)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Build a ``ServerConfig`` from parsed arguments."""
    base: dict[str, Any] = json.loads(args.config) if args.config else {}
    if args.latency:
        base["latency"] = _per_model(args.latency, bare_key="*")
    if args.rate_limit:
        base["rate_limit"] = _per_model(args.rate_limit, bare_key="*")
    if args.max_concurrency:
        caps = _per_model(args.max_concurrency, bare_key="*")
        base["max_concurrency"] = (
            {k: int(v) for k, v in caps.items()} if isinstance(caps, dict) else int(caps)
        )
    if args.fault:
        base["faults"] = [_fault(s) for s in args.fault]
    optional = {
        "latency_jitter": args.jitter, "rate_burst": args.rate_burst, "seed": args.seed,
        "require_api_key": args.require_api_key, "record_requests": args.record,
        "responder": args.responder, "retry_hint": args.retry_hint,
    }
    base.update({k: v for k, v in optional.items() if v is not None})
    return ServerConfig().updated(base)


async def _serve(host: str, port: int, config: ServerConfig) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    async with LLMServer(host, port, config=config) as server:
        line = {
            "base_url": server.base_url,
            "openai_base_url": server.openai_base_url,
            "anthropic_base_url": server.anthropic_base_url,
            "pid": os.getpid(),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await done.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ConfigError, ValueError, TypeError) as exc:
        print(f"plait-testing-server: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args.host, args.port, config))
    except ConfigError as exc:
        print(f"plait-testing-server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
