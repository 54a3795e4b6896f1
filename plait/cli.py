"""The ``plait`` command: ``plait run module.py:Pipeline --input ... --output ...``.

Ray is imported only for ``--executor ray``; the local executor writes the same Parquet
output with pyarrow (both use :mod:`plait.io`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from plait.cli_cost import (
    BUDGET_EXIT,
    add_cache_command,
    add_cost_arguments,
    budget_note,
    cache_main,
    estimate_main,
)
from plait.errors import ConfigError, PlaitError
from plait.io import DatasetSummary, OutputDir, run_dataset_local
from plait.io._arrow import pq
from plait.module import Module

__all__ = ["DISTRIBUTION", "load_pipeline", "main", "parse_columns", "parse_env",
           "sample_errors"]

DISTRIBUTION = "plait-pipelines"
"""This project's name on the package index (``pip install plait-pipelines[ray]``)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plait", description="Run plait pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="Run a pipeline over a dataset; write Parquet.")
    run.add_argument("pipeline", help="module.py:Class, package.module:Class, or :instance")
    run.add_argument("--input", required=True, help="Parquet/CSV/JSON-lines file or directory")
    run.add_argument("--output", required=True, help="Output directory (Parquet parts)")
    run.add_argument("--resources", help="resources.yaml (default: the pipeline's bound)")
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument("--address", help="Ray address (ray executor), e.g. auto or host:6379")
    run.add_argument("--resume", nargs="?", const="auto", default="auto",
                     choices=("auto", "force", "fresh"),
                     help="auto (default): skip committed rows of the same pipeline and "
                          "input; force: resume anyway; fresh: start over")
    run.add_argument("--columns", help="forward() argument to column: arg=col,arg2=col2")
    run.add_argument("--rows-per-chunk", type=int,
                     help="Rows per committed part (default: sized from the dataset and "
                          "workers, at most 1000)")
    run.add_argument("--workers", type=int, help="Ray worker actors (ray executor)")
    run.add_argument("--keep-failed", action="store_true",
                     help="On resume, keep committed failed rows instead of retrying them")
    run.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                     help="Environment variable for the Ray workers (repeatable); NAME alone "
                          "copies it from this shell. Values show in Ray's logs: for keys "
                          "prefer --env-file")
    run.add_argument("--env-file", metavar="PATH",
                     help="NAME=VALUE file every Ray worker reads at start (a path on shared "
                          "storage or a mounted secret); its values never enter Ray's logs")
    run.add_argument("--runtime-env", metavar="JSON",
                     help='Ray runtime_env for the driver\'s job, e.g. \'{"pip": ["x"]}\'')
    run.add_argument("--profile", help="Write a Chrome trace here (ray executor)")
    run.add_argument("--no-progress", action="store_true", help="Hide the progress bar")
    add_cost_arguments(run)
    add_cache_command(commands)
    return parser


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``"a=col1,b=col2"`` -> ``{"a": "col1", "b": "col2"}``.

    Raises:
        ConfigError: A pair lacks its ``=``.
    """
    if not text:
        return None
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        arg, sep, column = pair.partition("=")
        if not sep or not arg.strip() or not column.strip():
            raise ConfigError(f"--columns takes arg=column pairs separated by commas, got "
                              f"{pair!r} in {text!r}. Example: --columns text=body,lang=language")
        mapping[arg.strip()] = column.strip()
    return mapping


def load_pipeline(spec: str) -> tuple[Module, ModuleType]:
    """Import ``path/to/file.py:Name`` or ``package.module:Name``; instantiate a class.

    Raises:
        ConfigError: The spec is malformed, or names nothing that is (or makes) a Module.
    """
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ConfigError(f"Pipeline {spec!r} must look like module.py:MyPipeline or "
                          "package.module:MyPipeline.")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise ConfigError(f"Pipeline file {target} does not exist.")
        sys.path.insert(0, str(path.parent))  # so the file's sibling imports work
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"Cannot import {target} as a Python module.")
        source = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = source
        module_spec.loader.exec_module(source)
    else:
        source = importlib.import_module(target)
    obj: Any = getattr(source, name, None)
    if obj is None:
        raise ConfigError(f"{target} has no attribute {name!r}.")
    if isinstance(obj, type) and issubclass(obj, Module):
        obj = _instantiate(obj, spec, target, name)
    if not isinstance(obj, Module):
        kind = type(obj).__name__  # pyright: ignore[reportUnknownArgumentType]
        raise ConfigError(f"{spec} is a {kind}, not a plait Module (or a Module "
                          "class that takes no arguments).")
    return obj, source


def _instantiate(cls: type[Module], spec: str, target: str, name: str) -> Module:
    """``cls()``; a class that needs arguments is refused with the fix, not a traceback."""
    params = [p for p in inspect.signature(cls).parameters.values()
              if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params:
        needed = ", ".join(p.name for p in params)
        raise ConfigError(
            f"{spec}: {name}.__init__ needs arguments ({needed}), and the CLI creates the "
            f"pipeline with none. In {target} build one, e.g. `pipeline = {name}({needed}=...)`"
            f", and run {target}:pipeline; or give the arguments defaults.")
    return cls()


def _ship_local_modules(cloudpickle: Any, directory: Path) -> None:
    """Pickle every module loaded from the pipeline's directory by value.

    Ray workers import pickled classes and functions by module name; modules next to the
    pipeline file (its own helpers) are not installed on the workers, so their code travels
    with the pipeline instead. Installed packages (site-packages) are left to the workers.
    """
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or "site-packages" in file:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(directory) and not path.name.startswith("_"):
            cloudpickle.register_pickle_by_value(module)


def parse_env(pairs: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``["A=1", "B"]`` -> ``{"A": "1", "B": environ["B"]}``.

    Raises:
        ConfigError: A bare name is not set in ``environ``, or a name is empty.
    """
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"--env {pair!r} has no name. Use --env NAME=VALUE or --env "
                              "NAME (copied from this shell).")
        if not sep:
            if key not in environ:
                raise ConfigError(f"--env {key} copies {key} from this shell, where it is not "
                                  f"set. Export it first, or pass --env {key}=VALUE.")
            value = environ[key]
        env[key] = value
    return env


def _ray_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"address": args.address} if args.address else {}
    env = parse_env(args.env, os.environ)
    if env:
        options["env_vars"] = env
    if args.env_file:
        options["env_file"] = args.env_file
    if args.runtime_env:
        try:
            runtime_env = json.loads(args.runtime_env)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--runtime-env is not JSON ({exc}): {args.runtime_env!r}. "
                              'Example: --runtime-env \'{"pip": ["requests"]}\'') from exc
        if not isinstance(runtime_env, dict):
            raise ConfigError("--runtime-env must be a JSON object, e.g. '{\"pip\": [...]}'.")
        options["runtime_env"] = runtime_env
    return options


def _run(args: argparse.Namespace) -> DatasetSummary:
    if args.rows_per_chunk is not None and args.rows_per_chunk < 1:
        raise ConfigError(f"--rows-per-chunk {args.rows_per_chunk}: each committed part needs "
                          "at least 1 row. Pass a positive number (e.g. --rows-per-chunk 100) "
                          "or leave it out to size chunks from the dataset and workers.")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: pass at least 1, or leave it out to "
                          "use the cluster's CPUs (1 to 4).")
    pipeline, source = load_pipeline(args.pipeline)
    columns = parse_columns(args.columns)
    progress = False if args.no_progress else None
    if args.executor == "local":
        return _run_local(args, pipeline, columns, progress)
    try:
        cloudpickle: Any = importlib.import_module("ray.cloudpickle")
        dataset: Any = importlib.import_module("plait_ray.dataset")
    except ImportError as exc:
        raise ConfigError(f"Executor 'ray' needs plait_ray. Install it with: pip install "
                          f"'{DISTRIBUTION}[ray]' ({exc})") from exc
    # Workers cannot import a pipeline file loaded by path, nor its sibling helper modules:
    # ship their code with the pipeline.
    cloudpickle.register_pickle_by_value(source)
    source_file = getattr(source, "__file__", None)
    if source_file and args.pipeline.rpartition(":")[0].endswith(".py"):
        _ship_local_modules(cloudpickle, Path(source_file).resolve().parent)
    summary: DatasetSummary = dataset.run_dataset(
        pipeline, args.input, args.output, resources=args.resources, columns=columns,
        resume=args.resume, rows_per_chunk=args.rows_per_chunk, workers=args.workers,
        progress=progress, profile=args.profile, retry_failed=not args.keep_failed,
        executor_options=_ray_options(args), cache=args.cache, budget_usd=args.budget_usd)
    return summary


def _run_local(args: argparse.Namespace, pipeline: Module, columns: dict[str, str] | None,
               progress: bool | None) -> DatasetSummary:
    return run_dataset_local(pipeline, args.input, args.output, resources=args.resources,
                             columns=columns, resume=args.resume,
                             rows_per_chunk=args.rows_per_chunk or 1000, progress=progress,
                             retry_failed=not args.keep_failed, cache=args.cache,
                             budget_usd=args.budget_usd)


def sample_errors(output: str | os.PathLike[str], limit: int = 3) -> list[tuple[int, str]]:
    """The first ``limit`` failed rows of an output directory, as (row_id, error)."""
    samples: list[tuple[int, str]] = []
    for path in OutputDir(output).part_paths():
        table: Any = pq.read_table(path, columns=["row_id", "error"])
        for row_id, error in zip(table.column("row_id").to_pylist(),
                                 table.column("error").to_pylist(), strict=True):
            if error is not None:
                samples.append((int(row_id), str(error)))
                if len(samples) >= limit:
                    return samples
    return samples


def _interrupted(output: str) -> str:
    try:
        rows = OutputDir(output).committed_stats().rows
    except (OSError, PlaitError):
        rows = 0
    return (f"plait: interrupted. {rows:,} rows are committed in {output}; rerun the same "
            "command to run the rest (resume is the default).")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plait`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "cache":
            return cache_main(args)
        if args.estimate:
            pipeline, _ = load_pipeline(args.pipeline)
            return estimate_main(args, pipeline, parse_columns(args.columns))
        summary = _run(args)
    except PlaitError as exc:
        print(f"plait: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(args.output), file=sys.stderr)
        return 130
    print(summary.format())
    note = budget_note(args, summary.rows, summary.cost)
    if note is not None:
        print(note, file=sys.stderr)
        return BUDGET_EXIT
    if summary.errors:
        print(f"plait: {summary.errors:,} rows failed; their error is in the output's "
              "'error' column. First ones:", file=sys.stderr)
        for row_id, error in sample_errors(summary.output):
            print(f"  row {row_id}: {error[:300]}", file=sys.stderr)
        print("Fix the cause and rerun the same command: failed rows are retried on resume "
              "(--keep-failed keeps them).", file=sys.stderr)
        return 1
    return 0
