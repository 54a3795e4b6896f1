"""The batch-id journal: which batches were submitted, holding which calls.

One JSON line per submitted batch, appended and fsync'ed before the submission returns to
the caller, so a driver killed at any later point finds every batch it paid for::

    {"v": 1, "batch": "batch_abc", "provider": "openai", "at": 1767000000.0,
     "items": ["3f2a...-0", "9b1c...-0", ...]}

Before the batch is created, an intent line with the same items and a random tag is
appended (``{"v": 1, "intent": "plait-...", "items": [...], ...}``); the batch line repeats
the tag. An intent with no batch line is a kill between the provider creating the batch and
its id reaching disk: a re-run asks the provider for the batch carrying that tag (OpenAI
batch ``metadata``; Anthropic batches carry none, so those calls are submitted again).

An item id (the batch's ``custom_id``) is ``<request hash>-<n>``: the hash of the exact
request body (model, messages, settings), and ``n`` counting submissions of that same body,
so a retry of a failed call gets a new id and the same call in a re-run is recognised. A
re-run claims journaled items by request hash instead of submitting again and reads their
results from the provider (results stay available for weeks).

Each process appends to its own file (``journal-<pid>-<random>.jsonl``) under
``<journal_dir>/<alias>/`` and reads them all, so Ray workers share one journal without
locks. Lines are plain data: no key, no prompt, nothing that is ever executed. A line cut
short by a kill is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BatchJournal", "JournaledBatch", "item_id", "request_hash"]

_ITEM = re.compile(r"^([0-9a-f]{32})-([0-9]{1,9})$")
_BATCH_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def request_hash(provider: str, payload: Mapping[str, Any]) -> str:
    """32 hex digits identifying the exact request body sent to ``provider``."""
    text = json.dumps([provider, payload], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def item_id(digest: str, n: int) -> str:
    """The ``custom_id`` of the ``n``-th submission of the request ``digest``."""
    return f"{digest}-{n}"


class JournaledBatch:
    """A batch found in the journal: its id, when it was submitted, its items."""

    __slots__ = ("batch_id", "items", "submitted_at")

    def __init__(self, batch_id: str, submitted_at: float, items: Sequence[str]) -> None:
        self.batch_id = batch_id
        self.submitted_at = submitted_at
        self.items = tuple(items)


class BatchJournal:
    """Durable record of one endpoint's submitted batches, and claims on their items.

    Args:
        directory: The endpoint's journal directory (created on first write), or None to
            keep the record in memory only (nothing to resume from).
        provider: The provider's name, recorded with each batch.
    """

    def __init__(self, directory: Path | None, provider: str) -> None:
        self._dir = directory
        self._provider = provider
        self._file: Path | None = None
        self._by_hash: dict[str, list[tuple[int, str, str]]] = {}  # hash -> (n, item, batch)
        self._next: dict[str, int] = {}
        self._claimed: set[str] = set()
        self._resolved: set[str] = set()
        self.batches: dict[str, JournaledBatch] = {}
        self.intents: dict[str, tuple[float, list[str]]] = {}
        """Submissions begun but with no batch id recorded: intent key -> (time, items)."""
        if directory is not None and directory.is_dir():
            for path in sorted(directory.glob("journal-*.jsonl")):
                self._load(path)
            for intent in self._resolved:  # its batch record is in another file
                self.intents.pop(intent, None)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            try:
                record: object = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if isinstance(record, dict):
                self._remember(record)  # pyright: ignore[reportUnknownArgumentType]

    def _remember(self, record: Mapping[str, Any]) -> None:
        batch_id, items, at = record.get("batch"), record.get("items"), record.get("at")
        intent = record.get("intent")
        if isinstance(intent, str) and _BATCH_ID.match(intent):
            if batch_id is None:  # submission started; its batch id may never have arrived
                if isinstance(items, list) and isinstance(at, int | float):
                    kept = [str(i) for i in items if isinstance(i, str) and _ITEM.match(i)]  # pyright: ignore[reportUnknownVariableType]
                    self.intents[intent] = (float(at), kept)
                    for item in kept:
                        digest, _, n = item.rpartition("-")
                        self._next[digest] = max(self._next.get(digest, 0), int(n) + 1)
                return
            self.intents.pop(intent, None)
            self._resolved.add(intent)
        if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
            return
        if not isinstance(items, list) or not isinstance(at, int | float):
            return
        kept: list[str] = []
        for item in items:  # pyright: ignore[reportUnknownVariableType]
            match = _ITEM.match(item) if isinstance(item, str) else None
            if match is None:
                continue
            digest, n = match.group(1), int(match.group(2))
            kept.append(match.group(0))
            self._by_hash.setdefault(digest, []).append((n, match.group(0), batch_id))
            self._next[digest] = max(self._next.get(digest, 0), n + 1)
        self.batches[batch_id] = JournaledBatch(batch_id, float(at), kept)

    def claim(self, digest: str) -> tuple[str, str] | None:
        """A journaled, unclaimed submission of request ``digest``: (item, batch id)."""
        for _, item, batch_id in sorted(self._by_hash.get(digest, ())):
            if item not in self._claimed:
                self._claimed.add(item)
                return item, batch_id
        return None

    def new_item(self, digest: str) -> str:
        """A fresh item id for request ``digest`` (never one the journal already holds)."""
        n = self._next.get(digest, 0)
        self._next[digest] = n + 1
        item = item_id(digest, n)
        self._claimed.add(item)
        return item

    async def record_intent(self, intent: str, items: Sequence[str]) -> None:
        """Append, durably, that a batch of ``items`` is about to be created as ``intent``.

        A kill between the provider creating the batch and ``record`` leaves this line; a
        re-run asks the provider for the batch tagged ``intent`` (``BatchAPI.find``).
        """
        line = json.dumps({"v": 1, "intent": intent, "provider": self._provider,
                           "at": time.time(), "items": list(items)}) + "\n"
        if self._dir is not None:
            await asyncio.to_thread(self._append, line)

    async def record(self, batch_id: str, items: Sequence[str], intent: str | None = None
                     ) -> None:
        """Append the batch durably (fsync'ed), off the event loop."""
        at = time.time()
        fields: dict[str, Any] = {"v": 1, "batch": batch_id, "provider": self._provider,
                                  "at": at, "items": list(items)}
        if intent is not None:
            fields["intent"] = intent
            self.intents.pop(intent, None)
        line = json.dumps(fields) + "\n"
        if self._dir is not None:
            await asyncio.to_thread(self._append, line)
        self.batches[batch_id] = JournaledBatch(batch_id, at, items)
        for item in items:
            digest, _, n = item.rpartition("-")
            self._by_hash.setdefault(digest, []).append((int(n), item, batch_id))

    def _append(self, line: str) -> None:
        assert self._dir is not None
        if self._file is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._file = self._dir / f"journal-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        with open(self._file, "a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
