"""Checkpoints: completed rows and LLM node values, persisted as they finish.

The same store serves the local asyncio executor and Ray workers writing from many processes
into one directory on shared storage.

Layout of a checkpoint directory:

```
manifest.json                    graph_hash, input_fingerprint, plait_version, created_at,
                                 format_version, checkpoint_id; written atomically
part-<writer>-<seq>.arrow        one Arrow IPC segment per flush of one writer (see _files.py),
                                 with a checksum and the manifest's checkpoint_id
.part-...arrow.tmp-<random>      an interrupted write; never read, removed by resume="fresh"
```

Writing. ``record_row`` / ``record_node`` / ``record_failure`` serialize the value
(:mod:`plait.serialize`, never pickle) and append a tuple to an in-memory buffer; a flush
turns the buffer into one Arrow table and writes it atomically (temp file in the same
directory, fsync, ``os.replace``, fsync of the directory). A flush happens when
``flush_every`` records are buffered or ``flush_interval`` seconds passed since the last one
(checked when a record arrives), on ``flush()`` / ``await aflush()`` and on ``close()``. A
process killed at any moment loses at most its unflushed buffer; every committed segment stays
readable.

Several writers. Each writer (process) names its segments with its own writer id and sequence
number, so writers never touch each other's files. Readers union all segments in commit order
and de-duplicate: for a row recorded done twice (redone after a writer crashed having already
committed it) the first committed record wins, so every row is returned exactly once.
Only the driver may open with ``resume="fresh"``; workers open the prepared directory with
``resume="auto"`` (``open(load=False)`` when the driver tells them which rows to skip).

Rows and inputs. Every record carries the hash of its row's inputs (:func:`row_hash`); a
stored result or node serves a row only when the row's current inputs hash the same, so a
checkpoint never returns an output computed from other inputs. Streamed (generator) rows are
hashed as they are read; the manifest then says ``input_fingerprint="stream"``.

Resuming. ``open()`` compares the manifest with the run's graph hash and input fingerprint:

- ``resume="auto"`` (default): resume when both match; otherwise raise
  :class:`~plait.errors.CheckpointError` saying what changed and offering the two options below.
  A streamed row whose inputs differ from the stored ones raises the same way, when it is read.
- ``resume="force"``: resume anyway and adopt the new hash/fingerprint in the manifest. A row's
  stored output and nodes are reused only where that row's inputs match; other rows run again.
  Only rows of the current run are ever returned.
- ``resume="fresh"``: delete the old records (only plait's own files) and start over.

Trust. Loading never runs code: values are JSON, pydantic models are rebuilt only as classes
passed in ``models`` (the pipeline's own), and nothing named in a file is imported. A segment
that is truncated, edited (checksum), or copied from another checkpoint (checkpoint_id), a
manifest that is not plait's, or a value that is not plait's JSON raises ``CheckpointError``
naming the file, with the choices: delete that file, or ``resume="fresh"``.

After ``open()``, ``is_row_done(row_id)`` says which rows to skip, ``completed_rows()`` gives
their outputs and usage (read lazily from disk; memory on load is O(completed row ids)), and
``completed_nodes(row_id)`` gives the completed node values of rows that are not done, so no
LLM request is repeated. Node records of done rows are never loaded.

Failures. ``record_failure(row_id, error)`` stores the error as type name, message and status
only. A failed row is NOT completed: the next run retries it (reusing its completed nodes);
``failed_rows()`` reports the stored errors.

Checkpoints hold only the values given to them (outputs, node values, token counts); the store
never sees endpoint configs, so API keys and headers cannot reach its files.
"""

from plait.checkpoint._manifest import Manifest, fingerprint_inputs, plait_version, row_hash
from plait.checkpoint._state import RowRecord
from plait.checkpoint._store import CheckpointStore, ResumeMode

__all__ = [
    "CheckpointStore",
    "Manifest",
    "ResumeMode",
    "RowRecord",
    "fingerprint_inputs",
    "plait_version",
    "row_hash",
]
