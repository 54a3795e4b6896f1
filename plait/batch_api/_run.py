"""Where a run's batched endpoints journal their batches: under its ``checkpoint_dir``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from plait.batch_api._policy import as_policy
from plait.resources.config import EndpointConfig, ResourceConfig

__all__ = ["JOURNAL_SUBDIR", "with_journal_dir"]

JOURNAL_SUBDIR = "batch_api"


def with_journal_dir(resources: ResourceConfig, checkpoint_dir: Path | None, *,
                     fresh: bool = False, subdir: str = JOURNAL_SUBDIR) -> ResourceConfig:
    """``resources`` with each batched endpoint journaling under ``checkpoint_dir``.

    Endpoints that set ``BatchPolicy.journal_dir`` keep it; without a checkpoint_dir (or
    without batched endpoints) ``resources`` itself is returned. ``fresh`` (a run with
    ``resume="fresh"``) deletes the endpoints' journals under ``checkpoint_dir`` first, as
    the checkpoint's records are: the run starts over and claims no earlier batch.
    ``subdir`` names the journal directory inside ``checkpoint_dir`` (a dataset output
    directory uses ``"_batch_api"``, which Parquet readers skip).
    """
    if checkpoint_dir is None:
        return resources
    changed: dict[str, Any] = {}
    for alias, config in resources.items():
        policy = as_policy(getattr(config, "batch", False))
        if (isinstance(config, EndpointConfig) and policy is not None
                and policy.journal_dir is None):
            directory = checkpoint_dir / subdir
            if fresh:
                for old in (directory / alias).glob("journal-*.jsonl"):
                    old.unlink(missing_ok=True)
            # replace() runs __init__ with every field, the inline key included.
            changed[alias] = dataclasses.replace(
                config, batch=policy.with_journal_dir(directory))
    if not changed:
        return resources
    return ResourceConfig(endpoints={**resources.endpoints, **changed})
