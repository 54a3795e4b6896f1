"""A content-addressed store of LLM replies on a (possibly shared) filesystem.

Layout: ``<root>/v1/<first 2 hex>/<rest of the key>.json``, one file per reply. A file is
one line holding the SHA-256 of the payload, then the payload: JSON (never pickle: reading
a cache entry can never run code). Writes go to a temporary file in the same directory and
are then renamed over the entry (``os.replace``), so a reader sees the old entry, the new
one, or none, never half of one; several processes, or several nodes sharing the directory
over NFS/EFS, can write and read it at once (the same key written twice holds the same
reply, so either writer may win). A crash leaves at most a stray ``*.tmp`` file, which
``prune`` removes. An entry whose checksum or JSON does not verify is treated as a miss and
reported by the caller; the next write of that key replaces it.

Entries hold the reply text, its token usage and the model; never a key, header or URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from plait.errors import ConfigError

__all__ = ["CacheDirStats", "CachedReply", "CorruptEntry", "ResponseCache"]

_LAYOUT = "v1"
_READ = 1 << 16


@dataclass(frozen=True, slots=True)
class CachedReply:
    """One stored reply.

    Attributes:
        text: The reply text, exactly as the provider returned it (before parsing).
        input_tokens: Input tokens the original call used (what a hit saves).
        output_tokens: Output tokens the original call used.
        model: The model that answered.
        created: Unix time the entry was written.
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    created: float = 0.0


class CorruptEntry(Exception):
    """An entry that failed verification (read as a miss; ``str()`` says why)."""


@dataclass(frozen=True, slots=True)
class CacheDirStats:
    """What ``plait cache stats`` prints.

    Attributes:
        path: The cache directory.
        entries: Stored replies.
        bytes: Their total size on disk.
        oldest: Unix time of the oldest entry (None if empty).
        newest: Unix time of the newest entry (None if empty).
        temp_files: Leftover temporary files of interrupted writes.
    """

    path: Path
    entries: int
    bytes: int
    oldest: float | None
    newest: float | None
    temp_files: int = 0

    def format(self) -> str:
        """A short human-readable summary."""
        def when(t: float | None) -> str:
            return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

        return (f"cache {self.path}: {self.entries:,} entries, {self.bytes / 1e6:.1f} MB, "
                f"oldest {when(self.oldest)}, newest {when(self.newest)}"
                + (f", {self.temp_files} leftover temp files" if self.temp_files else ""))


class ResponseCache:
    """A directory of cached replies; cheap to pickle (it is only its path).

    Args:
        path: The cache directory (created on the first write). On a Ray cluster, a path
            on storage every node mounts (NFS, EFS, a shared disk), so any node's rerun
            hits entries written by the others.

    Example:
        >>> cache = ResponseCache("~/.cache/plait")
        >>> cache.get("ab12...") is None
        True
    """

    def __init__(self, path: str | Path) -> None:
        root = Path(path).expanduser()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"cache path {root} is a file, not a directory. Pass a "
                              f"directory (created if missing), e.g. cache='{root}.cache'.")
        self.path = root
        self._root = os.path.join(str(root), _LAYOUT)  # string joins: pathlib costs ~30 µs/hit
        self._made: set[str] = set()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._root = os.path.join(str(self.path), _LAYOUT)
        self._made = set()

    def entry_path(self, key: str) -> Path:
        """Where the entry of ``key`` lives."""
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        return f"{self._root}/{key[:2]}/{key[2:]}.json"

    def get(self, key: str) -> CachedReply | None:
        """The entry of ``key``, or None when there is none.

        Reads run inline: an entry is a small file, in the page cache when hot, read in
        microseconds; a thread hop would cost more than the read.

        Raises:
            CorruptEntry: The file exists but does not verify (torn, edited, not ours).
        """
        try:
            fd = os.open(self._file(key), os.O_RDONLY)  # no buffered file object: ~2x faster
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptEntry(f"cannot open it: {exc}") from exc
        try:
            chunks = [os.read(fd, _READ)]
            while len(chunks[-1]) == _READ:
                chunks.append(os.read(fd, _READ))
        except OSError as exc:
            raise CorruptEntry(f"cannot read it: {exc}") from exc
        finally:
            os.close(fd)
        return _decode(b"".join(chunks) if len(chunks) > 1 else chunks[0], key)

    def put(self, key: str, reply: CachedReply) -> None:
        """Store ``reply`` under ``key`` atomically (temp file + rename)."""
        payload = json.dumps({
            "key": key, "text": reply.text, "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens, "model": reply.model,
            "created": reply.created or time.time(),
        }, ensure_ascii=False, separators=(",", ":")).encode()
        data = hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        target = self._file(key)
        folder = os.path.dirname(target)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        tmp = f"{target}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _files(self) -> list[os.DirEntry[str]]:
        files: list[os.DirEntry[str]] = []
        root = self.path / _LAYOUT
        if not root.is_dir():
            return files
        for sub in os.scandir(root):
            if sub.is_dir():
                files.extend(e for e in os.scandir(sub.path) if e.is_file())
        return files

    def stats(self) -> CacheDirStats:
        """Count the entries (walks the directory: seconds for millions of entries)."""
        entries = size = temps = 0
        oldest: float | None = None
        newest: float | None = None
        for entry in self._files():
            if entry.name.endswith(".tmp"):
                temps += 1
                continue
            st = entry.stat()
            entries += 1
            size += st.st_size
            oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
            newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
        return CacheDirStats(self.path, entries, size, oldest, newest, temps)

    def prune(self, older_than_s: float, *, now: float | None = None) -> tuple[int, int]:
        """Delete entries (and leftover temp files) written more than ``older_than_s`` ago.

        Returns:
            (files removed, bytes freed).
        """
        if older_than_s < 0:
            raise ConfigError(f"older_than must be >= 0 seconds, got {older_than_s}.")
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = freed = 0
        for entry in self._files():
            try:
                st = entry.stat()
                if st.st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
                    freed += st.st_size
            except FileNotFoundError:  # another process pruned or replaced it
                continue
        return removed, freed


def _decode(data: bytes, key: str) -> CachedReply:
    head, sep, payload = data.partition(b"\n")
    if not sep or len(head) != 64:
        raise CorruptEntry("it has no checksum line (torn or not a plait cache entry)")
    if hashlib.sha256(payload).hexdigest().encode() != head:
        raise CorruptEntry("its checksum does not match its contents (torn or edited)")
    try:
        fields: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CorruptEntry(f"its JSON does not parse: {exc}") from exc
    if not isinstance(fields, dict) or fields.get("key") != key:  # pyright: ignore[reportUnknownMemberType]
        raise CorruptEntry("it holds another key's reply")
    try:
        return CachedReply(str(fields["text"]), int(fields["input_tokens"]),  # pyright: ignore[reportUnknownArgumentType]
                           int(fields["output_tokens"]), str(fields["model"]),  # pyright: ignore[reportUnknownArgumentType]
                           float(fields["created"]))  # pyright: ignore[reportUnknownArgumentType]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptEntry(f"a field is missing or malformed: {exc}") from exc
