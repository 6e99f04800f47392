"""The model from the Bento store, and the loop that scores chunks into a Parquet writer: one process's work."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch.errors import BadRow, UnknownModel
from batch.tables import Chunk, InputFile, as_read, chunk_to_table, dictionary_columns, output_table, read_chunks
from serving.core import Limits, Scorer
from serving.errors import one_line
from serving.layout import NotInStore, find_in_store
from serving.model import LoadedModel, load_model

# Rows per chunk (and per output row group) unless --chunk-rows says otherwise: big enough that
# numpy's per-call costs vanish, small enough that a chunk's arrays stay a few tens of MiB (on the
# wide table, 32,768 rows took 3% less time and 20% less memory than 65,536 with two threads:
# freed arrays under 32 MiB are reused, larger ones are new pages from the kernel each chunk).
DEFAULT_CHUNK_ROWS = 32_768
REJECT_FIELDS = [pa.field("row", pa.int64()), pa.field("column", pa.string()), pa.field("reason", pa.string())]


@dataclass(frozen=True)
class ModelFiles:
    """Where an imported model's files are and what it says of itself: enough for a worker to load it."""

    path: str
    metadata: dict
    tag: str


@dataclass(frozen=True)
class Job:
    """What every chunk of one job shares (sent once to each worker)."""

    source: InputFile
    columns: list[str]  # read from the input: kept, then the model's
    keep: list[str]
    chunk_rows: int
    model: ModelFiles
    schema: pa.Schema  # the output's
    rejects: pa.Schema | None  # refused rows are collected in this shape rather than fatal


def find_model(tag: str) -> ModelFiles:
    """The Bento model of this tag, or UnknownModel in one line."""
    try:
        path, metadata, full_tag = find_in_store(tag)
    except NotInStore as error:
        raise UnknownModel(f"{error}; import one with scripts/import_production.py") from None
    return ModelFiles(path=str(path), metadata=metadata, tag=full_tag)


def open_model(files: ModelFiles) -> LoadedModel:
    """Verify and load the served form, as the service does at start-up; one thread a call (chunks run in parallel)."""
    try:
        return load_model(Path(files.path), files.metadata, tag=files.tag)
    except Exception as error:  # noqa: BLE001 - a model that does not load is the tag's problem, in one line
        raise UnknownModel(f"the model {files.tag} cannot be loaded: {one_line(error)}") from None


def reject_schema(input_schema: pa.Schema, columns: list[str]) -> pa.Schema:
    """The rejects file: row number, column, reason, then the row's values as read."""
    return pa.schema([*REJECT_FIELDS, *(input_schema.field(name) for name in columns)])


def score_chunks(job: Job, model: LoadedModel, writer: pq.ParquetWriter, *, first_row: int,
                 row_groups: list[int] | None = None, threads: int = 1,
                 on_chunk: Callable[[int], None] = lambda rows: None) -> list[pa.Table]:
    """Score the chunks of these row groups (all: None) into writer, one row group each, in order; the refused rows.

    threads: chunks scored at once (each on one thread), written in the file's order.
    """
    scorer = Scorer(model, limits=Limits(max_rows=job.chunk_rows), metrics=None)
    rejected: list[pa.Table] = []
    text = dictionary_columns(job.source, model.schema.categorical, keep=job.keep)
    chunks = read_chunks(job.source, columns=job.columns, chunk_rows=job.chunk_rows, row_groups=row_groups,
                         as_dictionary=text)
    row = first_row  # data rows counted from 1, as a person reading the file counts them
    # The model, numpy's copies and Arrow let go of Python's lock: chunks scored on several
    # threads keep every core busy, where one chunk's model alone would leave the rest serial.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_score_chunk, chunk, job, scorer, row=row))
                row += chunk.num_rows
                if len(pending) > threads:  # at most one chunk waits ahead of each thread: memory stays flat
                    _write_chunk(pending.popleft().result(), writer, rejected, on_chunk)
            while pending:
                _write_chunk(pending.popleft().result(), writer, rejected, on_chunk)
        finally:
            for future in pending:
                future.cancel()
    return rejected


def _score_chunk(chunk: pa.Table, job: Job, scorer: Scorer, *, row: int) -> tuple[pa.Table, pa.Table | None, int]:
    """One chunk's output table, its refused rows (None: none) and its row count; BadRow if refused rows are fatal."""
    part = chunk_to_table(chunk, scorer.model.schema, parse_text=job.source.kind == "csv")
    refused = None
    if len(part.refused):
        if job.rejects is None:
            raise BadRow(describe_refusal(chunk, part.refused[0], part.columns[0], part.reasons[0], row=row))
        refused = rejects_table(chunk, part, job, row=row)
    if len(part.table):
        probabilities, predicted = scorer.score(part.table)
    else:
        probabilities, predicted = np.empty((0, len(scorer.model.class_names))), np.empty(0, dtype=np.int64)
    table = output_table(chunk, part.scored, probabilities, predicted, keep=job.keep, schema=job.schema)
    return table, refused, chunk.num_rows


def _write_chunk(scored: tuple[pa.Table, pa.Table | None, int], writer: pq.ParquetWriter,
                 rejected: list[pa.Table], on_chunk: Callable[[int], None]) -> None:
    """Append a scored chunk to the output (one row group) and its refused rows to rejected."""
    table, refused, rows = scored
    if refused is not None:
        rejected.append(refused)
    writer.write_table(table, row_group_size=max(table.num_rows, 1))
    on_chunk(rows)


def describe_refusal(chunk: pa.Table, index: int, column: str, reason: str, *, row: int) -> str:
    """`row 12, column 'age': 'abc' is not a number`: the one line of a bad row."""
    value = chunk.column(column)[int(index)].as_py()
    return f"row {row + int(index)}, column {column!r}: {repr(value)[:40]} is {reason}"


def rejects_table(chunk: pa.Table, part: Chunk, job: Job, *, row: int) -> pa.Table:
    """The refused rows of a chunk with their numbers and reasons."""
    taken = chunk.select(job.columns).take(pa.array(part.refused))
    arrays = [pa.array(part.refused + row, pa.int64()), pa.array(list(part.columns), pa.string()),
              pa.array(list(part.reasons), pa.string()),
              *(as_read(taken.column(name).combine_chunks()) for name in job.columns)]
    return pa.Table.from_arrays(arrays, schema=job.rejects)
