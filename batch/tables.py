"""Input files read in chunks with pyarrow, a chunk as the model's Table (and its refused rows), the output writer."""

# Every conversion is columnar (pyarrow.compute and numpy): a million rows are a few calls per
# column, never a Python step per value. The rules are /predict's (serving.protocols.decode):
# numeric columns take numbers or missing values, text columns text or missing, and numbers
# beyond MAX_ABS_FEATURE or infinite are refused.

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch.errors import BadInputFile
from serving.core import MAX_ABS_FEATURE, first_out_of_range
from serving.schema import Table, TableSchema, TextCodes

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
# pandas' default missing-value words: a CSV cell training (pandas.read_csv) saw as missing is missing here.
CSV_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
             "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
# What pyarrow's string -> float64 cast reads; a cell that does not match is refused, not guessed at.
NUMBER_PATTERN = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$"
CSV_BLOCK_BYTES = 4 << 20
# One set of writer settings for every mode: --jobs / --cluster output is byte-identical to one process.
WRITER_OPTIONS = {"compression": "snappy", "write_statistics": True,
                  "version": "2.6", "data_page_size": 1 << 20}


@dataclass(frozen=True)
class InputFile:
    """A Parquet or CSV file and its column names; row_groups holds Parquet's row counts (empty for CSV)."""

    path: Path
    kind: str  # "parquet" or "csv"
    columns: tuple[str, ...]
    row_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A chunk's rows to score, and the refused ones (index within the chunk, column, reason)."""

    table: Table
    scored: np.ndarray  # indices (within the chunk) of the rows in table
    refused: np.ndarray  # indices of the refused rows, ascending
    columns: np.ndarray  # object: the column each refused row is refused for
    reasons: np.ndarray  # object: why


def open_input(path: Path) -> InputFile:
    """The file's kind and columns, or BadInputFile in one line."""
    suffix = path.suffix.lower()
    if suffix not in PARQUET_SUFFIXES + CSV_SUFFIXES:
        raise BadInputFile(f"{path}: not a .parquet, .pq or .csv file")
    if not path.is_file():
        raise BadInputFile(f"{path}: no such file")
    try:
        if suffix in PARQUET_SUFFIXES:
            metadata = pq.ParquetFile(path).metadata
            return InputFile(path, "parquet", tuple(metadata.schema.to_arrow_schema().names),
                             tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)))
        with path.open("rb") as stream:
            header = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES))
            return InputFile(path, "csv", tuple(header.schema.names))
    except (OSError, pa.ArrowException) as error:
        raise BadInputFile(f"{path}: cannot be read as {suffix[1:]}: {str(error).strip().splitlines()[0]}") from None


def check_columns(source: InputFile, schema: TableSchema, keep: list[str]) -> list[str]:
    """The columns to read (kept, then the model's), or BadInputFile naming the first one missing."""
    for name in [*schema.feature_names, *keep]:
        if name not in source.columns:
            raise BadInputFile(f"{source.path}: no column {name!r} (the model takes {', '.join(schema.feature_names)})")
    if len(set(source.columns)) != len(source.columns):
        raise BadInputFile(f"{source.path}: duplicate column names")
    return list(dict.fromkeys([*keep, *schema.feature_names]))


def read_chunks(source: InputFile, *, columns: list[str], chunk_rows: int,
                row_groups: list[int] | None = None, as_dictionary: list[str] = ()) -> Iterator[pa.Table]:
    """The file's rows in chunks of chunk_rows (Parquet: within each row group, so any split of them agrees).

    as_dictionary: Parquet text columns read as Arrow dictionaries, as the file stores them.
    """
    try:
        if source.kind == "parquet":
            # A text column's few distinct values then stay as the file holds them, an index per row:
            # no string per row is built, and chunk_to_table needs no dictionary_encode (0.6 s of 1M rows).
            parquet = pq.ParquetFile(source.path, read_dictionary=as_dictionary)
            for group in range(len(source.row_groups)) if row_groups is None else row_groups:
                for batch in parquet.iter_batches(batch_size=chunk_rows, row_groups=[group], columns=columns):
                    yield pa.Table.from_batches([batch])
            return
        yield from _csv_chunks(source.path, columns=columns, chunk_rows=chunk_rows)
    except pa.ArrowException as error:
        raise BadInputFile(f"{source.path}: {str(error).strip().splitlines()[0]}") from None


def dictionary_columns(source: InputFile, names: list[str], *, keep: list[str]) -> list[str]:
    """The Parquet text columns among names that read_chunks may give as dictionaries (kept ones are written as read)."""
    if source.kind != "parquet":
        return []
    schema = pq.ParquetFile(source.path).schema_arrow
    return [name for name in names if name not in keep and
            (pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type))]


def as_read(array: pa.Array) -> pa.Array:
    """A column's values with the type the file gives them (a dictionary read of text decoded)."""
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _csv_chunks(path: Path, *, columns: list[str], chunk_rows: int) -> Iterator[pa.Table]:
    # Every cell as text: a number column's bad cell is then one refused row, not a failed read.
    options = pacsv.ConvertOptions(column_types={name: pa.string() for name in columns}, include_columns=columns,
                                   null_values=CSV_NULLS, strings_can_be_null=True)
    with path.open("rb") as stream:
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                convert_options=options)
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in reader:
            pending.append(batch)
            count += batch.num_rows
            while count >= chunk_rows:  # chunks of rows, not of bytes: the same whatever the block size
                table = pa.Table.from_batches(pending, schema=reader.schema)
                yield table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(pending, schema=reader.schema)


def chunk_to_table(chunk: pa.Table, schema: TableSchema, *, parse_text: bool = False) -> Chunk:
    """The model's Table of a chunk's acceptable rows, and which rows are refused and why.

    parse_text: text cells of number columns are read as numbers (a CSV's); else refused (Parquet's).
    """
    rows = chunk.num_rows
    column_of = np.full(rows, None, dtype=object)
    reason_of = np.full(rows, None, dtype=object)
    is_refused = np.zeros(rows, dtype=bool)

    def refuse(mask: np.ndarray, name: str, reason: str) -> None:
        fresh = mask & ~is_refused  # a row's first refusal counts
        if fresh.any():
            column_of[fresh], reason_of[fresh] = name, reason
            is_refused[fresh] = True

    numeric = np.empty((rows, len(schema.numeric)))
    for j, name in enumerate(schema.numeric):
        numeric[:, j], bad, reason = _numbers_of(chunk.column(name), parse_text=parse_text)
        refuse(bad, name, reason)
        if first_out_of_range(numeric[:, j:j + 1]) is not None:
            refuse(np.abs(numeric[:, j]) > MAX_ABS_FEATURE, name,
                   f"outside the accepted range -{MAX_ABS_FEATURE:g} to {MAX_ABS_FEATURE:g}")
    text = np.empty((rows, len(schema.categorical)), dtype=object)
    indices = np.empty((rows, len(schema.categorical)), dtype=np.intp)
    words = []
    for j, name in enumerate(schema.categorical):
        indices[:, j], column_words, bad = _texts_of(chunk.column(name))
        text[:, j] = column_words[indices[:, j]]
        words.append(column_words)
        refuse(bad, name, "not text")
    table = Table(numeric, text, TextCodes(indices, tuple(words)))
    refused = np.flatnonzero(is_refused)
    if not len(refused):
        return Chunk(table, np.arange(rows), refused, column_of[refused], reason_of[refused])
    scored = np.flatnonzero(~is_refused)
    return Chunk(table.take(scored), scored, refused, column_of[refused], reason_of[refused])


def _plain(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _numbers_of(column: pa.ChunkedArray, *, parse_text: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """float64 values (NaN missing), the rows that are not numbers, and the reason."""
    array = _plain(column)
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind) or pa.types.is_null(kind):
        values = pc.fill_null(pc.cast(array, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        return values, np.zeros(len(array), dtype=bool), ""
    if parse_text and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _parse_numbers(array)
    # Text in a typed file, booleans, dates...: /predict refuses "12" and true as numbers too.
    return np.full(len(array), np.nan), pc.is_valid(array).to_numpy(zero_copy_only=False), "not a number"


def _parse_numbers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray, str]:
    """Text cells as numbers (a CSV's cells); a cell that is not one is refused."""
    if pa.types.is_large_string(strings.type):
        strings = strings.cast(pa.string())
    looks = pc.fill_null(pc.match_substring_regex(strings, NUMBER_PATTERN, ignore_case=True), True)
    bad = ~looks.to_numpy(zero_copy_only=False)
    while True:
        try:
            numbers = pc.cast(pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), strings), pa.float64())
            break
        except pa.ArrowInvalid:  # a cell the pattern let through and the cast does not read
            bad[_first_unreadable(strings, bad)] = True
    values = np.array(pc.fill_null(numbers, np.nan).to_numpy(zero_copy_only=False))  # writable
    values[bad] = np.nan
    return values, bad, "not a number"


def _first_unreadable(strings: pa.Array, bad: np.ndarray) -> int:
    """Bisect for the first cell (not yet refused) that the float64 cast refuses."""
    low, high = 0, len(strings)
    while high - low > 1:
        middle = (low + high) // 2
        part = pc.if_else(pa.array(bad[low:middle]), pa.scalar(None, pa.string()), strings.slice(low, middle - low))
        try:
            pc.cast(part, pa.float64())
            low = middle
        except pa.ArrowInvalid:
            high = middle
    return low


def _texts_of(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's index into the column's distinct values (str, then None for missing), those values,
    and the rows that are not text."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    missing = np.zeros(len(array), dtype=np.intp), np.array([None], dtype=object)
    if pa.types.is_null(kind):
        return *missing, np.zeros(len(array), dtype=bool)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return *missing, pc.is_valid(array).to_numpy(zero_copy_only=False)
    # A column holds few distinct values: one str object each, and an index per row (the encoder
    # looks each distinct value up once: serving.schema.TextCodes).
    encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    words = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
    indices = pc.fill_null(encoded.indices, len(words) - 1).to_numpy(zero_copy_only=False)
    return indices.astype(np.intp, copy=False), words, np.zeros(len(array), dtype=bool)


def input_schema(source: InputFile, columns: list[str]) -> pa.Schema:
    """The types read_chunks gives these columns (a CSV's are all text), without field metadata."""
    if source.kind == "csv":
        return pa.schema([pa.field(name, pa.string()) for name in columns])
    schema = pq.ParquetFile(source.path).schema_arrow
    return pa.schema([schema.field(name).remove_metadata() for name in columns])


def output_schema(read_schema: pa.Schema, keep: list[str], class_names: list[str]) -> pa.Schema:
    """Kept columns as read, `label`, then probability_<class> per class (float64)."""
    fields = [read_schema.field(name) for name in keep]
    fields.append(pa.field("label", pa.string()))
    fields += [pa.field(f"probability_{name}", pa.float64()) for name in class_names]
    return pa.schema(fields)


def output_table(chunk: pa.Table, scored: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray,
                 *, keep: list[str], schema: pa.Schema) -> pa.Table:
    """One output row group: the kept columns of the scored rows, their labels and probabilities."""
    kept = chunk.select(keep) if len(scored) == chunk.num_rows else chunk.select(keep).take(pa.array(scored))
    class_names = [field.name.removeprefix("probability_") for field in schema][len(keep) + 1:]
    labels = pa.DictionaryArray.from_arrays(pa.array(predicted, pa.int32()), pa.array(class_names)).dictionary_decode()
    arrays = [*(kept.column(name).combine_chunks() if kept.num_rows else pa.array([], kept.schema.field(name).type)
                for name in keep), labels, *(pa.array(probabilities[:, k]) for k in range(len(class_names)))]
    return pa.Table.from_arrays(arrays, schema=schema)


def open_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer with the settings every mode shares."""
    # Probabilities hardly ever repeat: a dictionary of them is only hashed, then given up (on 1M
    # rows of two classes, writing took 0.18 s with one and 0.09 s without, and a quarter less space).
    dictionary = [field.name for field in schema if not pa.types.is_floating(field.type)]
    return pq.ParquetWriter(path, schema, **{**WRITER_OPTIONS, "use_dictionary": dictionary})
