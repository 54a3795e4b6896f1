"""The cost side of the ``plait`` command.

``--cache``, ``--budget-usd``, ``--estimate`` on ``plait run``, and ``plait cache
stats|prune`` for housekeeping.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from plait.cache import ResponseCache
from plait.errors import ConfigError

__all__ = ["BUDGET_EXIT", "add_cache_command", "add_cost_arguments", "budget_note",
           "cache_main", "estimate_main", "parse_age"]

BUDGET_EXIT = 3
"""Exit status of a run the budget stopped before its last row (rerun to continue)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_cost_arguments(run: argparse.ArgumentParser) -> None:
    """Add ``--cache``, ``--budget-usd``, ``--estimate`` and ``--sample-rows`` to ``run``."""
    run.add_argument("--cache", metavar="PATH",
                     help="Response cache directory: replies are stored there and reused, a "
                          "hit costs no request (on Ray: a path every node mounts)")
    run.add_argument("--budget-usd", type=float, metavar="USD",
                     help="Start no new row (on Ray: chunk) once spent + in-flight "
                          "reservations would exceed this; rerun to continue")
    run.add_argument("--estimate", action="store_true",
                     help="Print requests, tokens and cost (sync vs batch) instead of "
                          "running: the first LLM level from the real inputs, the rest from "
                          "a small paid sample run")
    run.add_argument("--sample-rows", type=int, default=10, metavar="N",
                     help="Rows --estimate runs for real (default 10; 0: none)")


def add_cache_command(commands: Any) -> None:
    """Add ``plait cache stats PATH`` and ``plait cache prune PATH --older-than AGE``."""
    cache = commands.add_parser("cache", help="Inspect or prune a response cache.")
    actions = cache.add_subparsers(dest="cache_command", required=True)
    stats = actions.add_parser("stats", help="Entries, size, oldest and newest entry.")
    stats.add_argument("path", help="The cache directory")
    prune = actions.add_parser("prune", help="Delete entries written before a given age.")
    prune.add_argument("path", help="The cache directory")
    prune.add_argument("--older-than", required=True, metavar="AGE",
                       help="e.g. 30d, 12h, 90m, 3600s (a bare number is seconds)")


def parse_age(text: str) -> float:
    """``"30d"`` -> seconds (units s, m, h, d, w; a bare number is seconds).

    Raises:
        ConfigError: Not a number with an optional unit.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ConfigError(f"--older-than {text!r} is not an age. Use a number and a unit: "
                          "30d, 12h, 90m, 3600s.")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def cache_main(args: argparse.Namespace) -> int:
    """Run ``plait cache stats|prune``; returns the exit status."""
    cache = ResponseCache(args.path)
    if not cache.path.is_dir():
        raise ConfigError(f"{cache.path} is not a cache directory (it does not exist). Pass "
                          "the path given to --cache / cache=.")
    if args.cache_command == "stats":
        print(cache.stats().format())
        return 0
    removed, freed = cache.prune(parse_age(args.older_than))
    print(f"pruned {removed:,} files ({freed / 1e6:.1f} MB) older than {args.older_than} "
          f"from {cache.path}")
    return 0


def budget_note(args: argparse.Namespace, rows_in_output: int, spent: float) -> str | None:
    """What to tell the user when ``--budget-usd`` left rows not started, else None."""
    if args.budget_usd is None:
        return None
    from plait.io._source import open_source

    total = open_source(args.input).total
    if total is None or rows_in_output >= total:
        return None
    return (f"plait: stopped by --budget-usd {args.budget_usd:g}: ${spent:.4f} spent this run, "
            f"{rows_in_output:,} of {total:,} rows in the output, {total - rows_in_output:,} "
            "not started. Rerun the same command (with a larger --budget-usd) to run them; "
            "rows already in the output are not paid again.")


def estimate_main(args: argparse.Namespace, pipeline: Any, columns: dict[str, str] | None
                  ) -> int:
    """Run ``plait run --estimate``: print the estimate; nothing is written."""
    from plait.pricing import estimate

    if args.sample_rows < 0:
        raise ConfigError(f"--sample-rows {args.sample_rows}: pass 0 or more.")
    result = estimate(pipeline, args.input, resources=args.resources, columns=columns,
                      sample_rows=args.sample_rows)
    print(result.format())
    return 0
