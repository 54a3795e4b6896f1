"""Dataset-scale runs: sources in, a Parquet dataset out, committed chunk by chunk.

The same schema and output layout serve the local executor (:func:`run_dataset_local`, used
by ``plait run --executor local``) and the Ray executor (``plait_ray.run_dataset``), which
imports these pieces; nothing here imports Ray.

- Sources (:mod:`plait.io._source`): Parquet, CSV or JSON-lines paths, or lists of dicts,
  read lazily in row order; a row's id is its position.
- Output (:mod:`plait.io._output`): ``part-<first>-<end>.parquet`` files committed atomically
  per chunk; a rerun skips committed rows, so every input row is in the output exactly once.
- Schema (:mod:`plait.io._schema`): input columns + ``output``, ``error``, ``input_tokens``,
  ``output_tokens``, ``latency_s``, ``row_id``. A failed row is kept, with its error.
"""

from plait.io._inputs import ColumnMap, chunk_rows, resolve_columns
from plait.io._local import arun_dataset_local, chunk_result, run_dataset_local
from plait.io._output import ChunkStats, OutputDir, ResumeMode, read_output
from plait.io._schema import RESULT_COLUMNS, check_input_columns, result_table
from plait.io._source import Chunk, FileSource, ListSource, Source, iter_chunks, open_source
from plait.io._summary import DatasetSummary

__all__ = [
    "RESULT_COLUMNS",
    "Chunk",
    "ChunkStats",
    "ColumnMap",
    "DatasetSummary",
    "FileSource",
    "ListSource",
    "OutputDir",
    "ResumeMode",
    "Source",
    "arun_dataset_local",
    "check_input_columns",
    "chunk_result",
    "chunk_rows",
    "iter_chunks",
    "open_source",
    "read_output",
    "resolve_columns",
    "result_table",
    "run_dataset_local",
]
