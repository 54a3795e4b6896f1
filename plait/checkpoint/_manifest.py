"""The manifest of a checkpoint directory and the fingerprint of a run's inputs.

``manifest.json`` says which pipeline and which inputs the records belong to; a run resumes
only when both match (or when told to with ``resume="force"``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from plait.checkpoint._files import FORMAT_VERSION, atomic_write_bytes
from plait.errors import CheckpointError
from plait.serialize import to_jsonable

__all__ = [
    "MANIFEST_NAME",
    "STREAM_FINGERPRINT",
    "Manifest",
    "fingerprint_inputs",
    "plait_version",
    "row_hash",
]

MANIFEST_NAME = "manifest.json"
STREAM_FINGERPRINT = "stream"
"""The input fingerprint of a run whose rows are not known up front (a generator): its rows
are checked one by one, by :func:`row_hash`, as they are read."""


def plait_version() -> str:
    """The installed plait version, or ``"unknown"`` when running from an uninstalled tree."""
    try:
        return version("plait-pipelines")  # this project's distribution name
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


def row_hash(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> str:
    """A stable hash of one row's inputs; stored with each record of the row.

    A stored record serves a row only when the row's inputs hash the same, so a checkpoint can
    never return an output computed from other inputs, whatever the run-level fingerprint says.

    Raises:
        CheckpointError: An input holds a value plait cannot serialize.
    """
    if not kwargs and all(type(arg) is str for arg in args):
        # The common row (text inputs) skips JSON: length-prefixed UTF-8, its own prefix.
        digest = hashlib.sha256(b"str\0")
        for arg in args:
            data = arg.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.hexdigest()[:32]
    encoded = json.dumps(to_jsonable([list(args), kwargs]), sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(b"json\0" + encoded).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a checkpoint directory holds.

    Attributes:
        graph_hash: Structural hash of the traced InferenceGraph.
        input_fingerprint: :func:`fingerprint_inputs` of the rows, or
            :data:`STREAM_FINGERPRINT` when the rows were streamed.
        plait_version: The plait that created the directory.
        created_at: ISO-8601 UTC time the directory was created.
        format_version: Layout version of the manifest and segments.
        checkpoint_id: Random id of this checkpoint; every segment carries it, so a segment
            from another checkpoint directory is recognised and refused.
    """

    graph_hash: str
    input_fingerprint: str
    plait_version: str
    created_at: str
    format_version: int = FORMAT_VERSION
    checkpoint_id: str = ""

    @classmethod
    def new(cls, graph_hash: str, input_fingerprint: str,
            checkpoint_id: str | None = None) -> Manifest:
        """A manifest for a new directory, stamped now with this plait's version."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(graph_hash, input_fingerprint, plait_version(), created, FORMAT_VERSION,
                   checkpoint_id or secrets.token_hex(8))

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
                f"Checkpoint manifest {path} cannot be read ({type(exc).__name__}: {exc}). "
                f"{_MANIFEST_CHOICES}"
            ) from None
        try:
            version = int(raw["format_version"])
            if version != FORMAT_VERSION:
                raise CheckpointError(
                    f"Checkpoint {directory} has format version {version} (written by plait "
                    f"{raw.get('plait_version', 'unknown')}); this plait ({plait_version()}) "
                    f"reads version {FORMAT_VERSION}. Use that plait version, or "
                    "resume='fresh' to start over."
                )
            return cls(
                graph_hash=_text(raw["graph_hash"]),
                input_fingerprint=_text(raw["input_fingerprint"]),
                plait_version=str(raw.get("plait_version", "unknown")),
                created_at=str(raw.get("created_at", "")),
                format_version=version,
                checkpoint_id=_text(raw["checkpoint_id"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"Checkpoint manifest {path} is not a plait manifest ({type(exc).__name__}: "
                f"{exc}). {_MANIFEST_CHOICES}"
            ) from None

    def mismatch(self, graph_hash: str, input_fingerprint: str) -> str | None:
        """Describe how this run differs from the checkpoint; None when it matches."""
        changes: list[str] = []
        if graph_hash != self.graph_hash:
            changes.append(
                f"the pipeline changed (graph hash {_short(self.graph_hash)} in the checkpoint, "
                f"{_short(graph_hash)} now)"
            )
        streamed = STREAM_FINGERPRINT in (input_fingerprint, self.input_fingerprint)
        # Streamed rows are checked one by one as they are read (row_hash), not here.
        if input_fingerprint != self.input_fingerprint and not streamed:
            changes.append(
                f"the inputs changed (fingerprint {_short(self.input_fingerprint)} in the "
                f"checkpoint, {_short(input_fingerprint)} now)"
            )
        return " and ".join(changes) or None


_MANIFEST_CHOICES = (
    "Rerun with resume='fresh' to delete this checkpoint's files and start over, delete "
    "manifest.json and rerun with resume='force' to keep only the stored rows whose inputs "
    "match, or use another checkpoint_dir."
)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
