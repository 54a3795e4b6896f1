"""The manifest of a checkpoint directory and the fingerprint of a run's inputs.

``manifest.json`` says which pipeline and which inputs the records belong to; a run resumes
only when both match (or when told to with ``resume="force"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from plait.checkpoint._files import FORMAT_VERSION, atomic_write_bytes
from plait.errors import CheckpointError
from plait.serialize import to_jsonable

__all__ = ["MANIFEST_NAME", "Manifest", "fingerprint_inputs", "plait_version"]

MANIFEST_NAME = "manifest.json"


def plait_version() -> str:
    """The installed plait version, or ``"unknown"`` when running from an uninstalled tree."""
    try:
        return version("pyplait")
    except PackageNotFoundError:
        return "unknown"


def fingerprint_inputs(rows: Iterable[Any]) -> str:
    """A stable hash of a run's input rows, computed in one pass with O(1) memory.

    Each row is hashed as canonical JSON (sorted keys, :func:`plait.serialize.to_jsonable`
    tags), length-prefixed so row boundaries count, followed by the row count.

    Args:
        rows: The input rows, in order. A generator is consumed.

    Returns:
        ``"sha256:<hex>"``; equal for equal rows in equal order.

    Raises:
        CheckpointError: A row holds a value plait cannot serialize.
    """
    digest = hashlib.sha256()
    count = 0
    for row in rows:
        encoded = json.dumps(
            to_jsonable(row), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
        count += 1
    digest.update(f"count={count}".encode())
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a checkpoint directory holds.

    Attributes:
        graph_hash: Structural hash of the traced InferenceGraph.
        input_fingerprint: :func:`fingerprint_inputs` of the rows.
        plait_version: The plait that created the directory.
        created_at: ISO-8601 UTC time the directory was created.
        format_version: Layout version of the manifest and segments.
    """

    graph_hash: str
    input_fingerprint: str
    plait_version: str
    created_at: str
    format_version: int = FORMAT_VERSION

    @classmethod
    def new(cls, graph_hash: str, input_fingerprint: str) -> Manifest:
        """A manifest for a new directory, stamped now with this plait's version."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(graph_hash, input_fingerprint, plait_version(), created)

    def write(self, directory: Path) -> None:
        """Write ``manifest.json`` into ``directory`` atomically."""
        data = json.dumps(asdict(self), indent=2, sort_keys=True).encode()
        atomic_write_bytes(directory / MANIFEST_NAME, data)

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """Read ``directory``'s manifest; None when there is none.

        Raises:
            CheckpointError: The manifest is unreadable or from a newer format version.
        """
        path = directory / MANIFEST_NAME
        try:
            raw: Any = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"Checkpoint manifest {path} cannot be read ({exc}). Rerun with "
                "resume='fresh' to start over in that directory."
            ) from exc
        try:
            manifest = cls(
                graph_hash=str(raw["graph_hash"]),
                input_fingerprint=str(raw["input_fingerprint"]),
                plait_version=str(raw.get("plait_version", "unknown")),
                created_at=str(raw.get("created_at", "")),
                format_version=int(raw["format_version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"Checkpoint manifest {path} is missing {exc}; it was not written by plait. "
                "Use another checkpoint_dir, or resume='fresh' to start over in it."
            ) from exc
        if manifest.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"Checkpoint {directory} has format version {manifest.format_version} (written "
                f"by plait {manifest.plait_version}); this plait ({plait_version()}) reads "
                f"version {FORMAT_VERSION}. Use that plait version, or resume='fresh'."
            )
        return manifest

    def mismatch(self, graph_hash: str, input_fingerprint: str) -> str | None:
        """Describe how this run differs from the checkpoint; None when it matches."""
        changes: list[str] = []
        if graph_hash != self.graph_hash:
            changes.append(
                f"the pipeline changed (graph hash {_short(self.graph_hash)} in the checkpoint, "
                f"{_short(graph_hash)} now)"
            )
        if input_fingerprint != self.input_fingerprint:
            changes.append(
                f"the inputs changed (fingerprint {_short(self.input_fingerprint)} in the "
                f"checkpoint, {_short(input_fingerprint)} now)"
            )
        return " and ".join(changes) or None


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
