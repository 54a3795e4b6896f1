"""The ``plait`` command: ``plait run module.py:Pipeline --input ... --output ...``.

Ray is imported only for ``--executor ray``; the local executor writes the same Parquet
output with pyarrow (both use :mod:`plait.io`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from plait.errors import ConfigError, PlaitError
from plait.io import DatasetSummary, run_dataset_local
from plait.module import Module

__all__ = ["load_pipeline", "main", "parse_columns"]


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
    run.add_argument("--rows-per-chunk", type=int, default=1000)
    run.add_argument("--workers", type=int, help="Ray worker actors (ray executor)")
    run.add_argument("--profile", help="Write a Chrome trace here (ray executor)")
    run.add_argument("--no-progress", action="store_true", help="Hide the progress bar")
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
        obj = obj()
    if not isinstance(obj, Module):
        kind = type(obj).__name__  # pyright: ignore[reportUnknownArgumentType]
        raise ConfigError(f"{spec} is a {kind}, not a plait Module (or a Module "
                          "class that takes no arguments).")
    return obj, source


def _run(args: argparse.Namespace) -> DatasetSummary:
    pipeline, source = load_pipeline(args.pipeline)
    columns = parse_columns(args.columns)
    progress = False if args.no_progress else None
    if args.executor == "local":
        return run_dataset_local(pipeline, args.input, args.output, resources=args.resources,
                                 columns=columns, resume=args.resume,
                                 rows_per_chunk=args.rows_per_chunk, progress=progress)
    try:
        cloudpickle: Any = importlib.import_module("ray.cloudpickle")
        dataset: Any = importlib.import_module("plait_ray.dataset")
    except ImportError as exc:
        raise ConfigError("Executor 'ray' needs plait_ray. Install it with: pip install "
                          f"'pyplait[ray]' ({exc})") from exc
    # Workers cannot import a pipeline file loaded by path: ship its code with the pipeline.
    cloudpickle.register_pickle_by_value(source)
    options: dict[str, Any] = {"address": args.address} if args.address else {}
    summary: DatasetSummary = dataset.run_dataset(
        pipeline, args.input, args.output, resources=args.resources, columns=columns,
        resume=args.resume, rows_per_chunk=args.rows_per_chunk, workers=args.workers,
        progress=progress, profile=args.profile, executor_options=options)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plait`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        summary = _run(args)
    except PlaitError as exc:
        print(f"plait: error: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0
