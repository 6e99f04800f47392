"""MLflow's scoring protocol, as `mlflow models serve` answers it (docs/mlflow-scoring.md says what and why)."""

from __future__ import annotations

import csv
import io
import json
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np

from serving.core import Scorer, check_range, check_row_count
from serving.errors import RequestError
from serving.openapi import Schemas, answer, body
from serving.protocols import Adapter
from serving.protocols.decode import load_json_object, read_rows, records_to_table
from serving.protocols.native import REFUSALS, ErrorResponse
from serving.protocols.records import RecordsReader
from serving.schema import Table, TableSchema

TAG = {"name": "MLflow scoring", "description": "What `mlflow models serve` answers, for MLflow's clients."}

PING_BODY = b"\n"
PING_HEADERS = [(b"content-type", b"application/json")]
VERSION_HEADERS = [(b"content-type", b"application/json")]
CSV_CONTENT_TYPES = frozenset({b"text/csv"})

# pandas' default na_values (pandas._libs.parsers.STR_NA_VALUES), which MLflow's read_csv uses:
# a cell equal to one of these, exactly, is a missing value.
NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})

# MLflow's ERROR_CODE_TO_HTTP_STATUS, reversed for the statuses it has one obvious code for.
_CODE_FOR_STATUS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "ENDPOINT_NOT_FOUND",
                    408: "DEADLINE_EXCEEDED", 409: "RESOURCE_CONFLICT", 429: "REQUEST_LIMIT_EXCEEDED",
                    500: "INTERNAL_ERROR", 501: "NOT_IMPLEMENTED", 503: "TEMPORARILY_UNAVAILABLE",
                    504: "DEADLINE_EXCEEDED"}
# Faults MLflow finds while enforcing the signature: INVALID_PARAMETER_VALUE, not BAD_REQUEST.
_SCHEMA_REASONS = frozenset({"missing_column", "unknown_column", "duplicate_column", "not_text",
                             "needs_records"})
# Characters pandas' float parser can accept; anything else ("1_0", Arabic digits, "NAN") is not
# a number to it, although Python's float() reads some of them.
_NUMBER_CHARACTERS = frozenset("0123456789+-.eEinfatyINFATY \t")
# Cells made of these only are parsed a column at a time (numpy reads them as float() does).
_PLAIN_NUMBER_CHARACTERS = frozenset("0123456789+-.eE")


def version_body(mlflow_version: str) -> bytes:
    """The GET /version body: the version as bare text, as MLflow answers it."""
    return mlflow_version.encode()


def error_body(message: str, *, error_code: str = "BAD_REQUEST") -> bytes:
    """MLflow's error document, with our own `error` key beside it (our clients read that one)."""
    return json.dumps({"error_code": error_code, "message": message, "error": message}).encode()


def error_code_for(status: int, reason: str) -> str:
    """The error_code MLflow gives for a refusal of this status and reason (see the docstring)."""
    if status in (400, 422):
        return "INVALID_PARAMETER_VALUE" if reason in _SCHEMA_REASONS else "BAD_REQUEST"
    if status in _CODE_FOR_STATUS:
        return _CODE_FOR_STATUS[status]
    return "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST"


MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_MLFLOW_EXAMPLE = '{"dataframe_split": {"columns": [...], "data": [[...]]}}'
# What /invocations' values must be: its rows, by column name, may hold null.
_MLFLOW_VALUES = "the values of the rows must be finite numbers, or null for a missing value"


def parse_mlflow_request(body: bytes, *, schema: TableSchema, max_rows: int) -> Table:
    """Rows from an `mlflow models serve` /invocations body, by column name."""
    feature_names = schema.feature_names
    document = load_json_object(body, example=_MLFLOW_EXAMPLE, values=_MLFLOW_VALUES)
    keys = [key for key in document if key in MLFLOW_KEYS]
    if len(keys) != 1 or set(document) - {keys[0], "params"}:
        raise RequestError(400, f"the body needs exactly one of {', '.join(MLFLOW_KEYS)}", "unknown_keys")
    payload = document[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise RequestError(400, "dataframe_split needs 'columns' and 'data'", "not_a_row")
        columns = payload.get("columns", feature_names)
        table = _split_table(columns, payload["data"], schema=schema, max_rows=max_rows)
        if table is not None:
            return table
        rows = [dict(zip(columns, row)) if isinstance(row, list) and isinstance(columns, list)
                and len(row) == len(columns) else row for row in payload["data"]]
    elif isinstance(payload, dict):  # {"column": [values...]} as `inputs` or `instances`
        lengths = {len(v) if isinstance(v, list) else -1 for v in payload.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise RequestError(400, "columns must be lists of the same length", "not_a_row")
        rows = [{k: v[i] for k, v in payload.items()} for i in range(lengths.pop())]
    elif isinstance(payload, list):  # records (dicts) or, beyond MLflow, positional rows
        rows = payload
    else:
        raise RequestError(400, f"{keys[0]} must be a list or an object", "not_a_row")
    if not rows:
        raise RequestError(400, "there are no rows to score", "empty_features")
    check_row_count(len(rows), max_rows=max_rows)
    for index, row in enumerate(rows):  # positional rows, in feature order, become records
        if isinstance(row, list):
            if len(row) != len(feature_names):
                raise RequestError(422, f"row {index} has {len(row)} values; the model takes {len(feature_names)} features", "wrong_length")
            rows[index] = dict(zip(feature_names, row))
        elif not isinstance(row, dict):
            raise RequestError(400, f"row {index} is not a list of values or an object", "not_a_row")
    return records_to_table(rows, schema=schema, max_rows=max_rows)


def _split_table(columns: object, data: list, *, schema: TableSchema, max_rows: int) -> Table | None:
    """dataframe_split's rows read by column position, a block at a time; None: read them as records."""
    if not (isinstance(columns, list) and data and len(data) <= max_rows
            and all(type(name) is str for name in columns) and sorted(columns) == sorted(schema.feature_names)
            and len(set(columns)) == len(columns)):
        return None
    at = {name: index for index, name in enumerate(columns)}
    return read_rows(data, list, numeric=[at[name] for name in schema.numeric],
                     text=[at[name] for name in schema.categorical], width=len(columns))


def parse_csv(body: bytes, *, schema: TableSchema, max_rows: int) -> Table:
    """The rows of a `text/csv` /invocations body: a header row naming every model column once,
    in any order, then one line per row; a cell in NA_STRINGS is a missing value."""
    if not body:
        raise RequestError(400, "the request body is empty; send a CSV table with a header row", "empty_body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "the request body is not valid UTF-8", "bad_encoding") from None
    if text.startswith("\ufeff"):  # a byte order mark, as spreadsheets write one
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise RequestError(400, "the CSV body has no header row", "empty_body")
        positions = _column_positions(header, schema)
        header_line = reader.line_num
        rows, lines = [], []
        for row in reader:
            if row:  # blank lines are skipped, as pandas does
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as error:
        raise RequestError(400, f"the request body is not valid CSV (line {reader.line_num}: {error})",
                           "malformed_csv") from None
    if not rows:
        raise RequestError(400, f"the CSV body has a header (line {header_line}) but no rows", "empty_features")
    check_row_count(len(rows), max_rows=max_rows)
    width = len(header)
    for index, row in enumerate(rows):
        if len(row) != width:
            raise RequestError(422, f"row {index} (line {lines[index]}) has {len(row)} values; "
                                    f"the header names {width} columns", "wrong_length")
    numeric = np.empty((len(rows), len(schema.numeric)))
    for j, name in enumerate(schema.numeric):
        numeric[:, j] = _numbers(rows, lines, positions[name], name)
    text_columns = np.empty((len(rows), len(schema.categorical)), dtype=object)
    for j, name in enumerate(schema.categorical):
        cells = np.array(list(map(itemgetter(positions[name]), rows)), dtype=object)
        cells[np.fromiter(map(NA_STRINGS.__contains__, cells), dtype=bool, count=len(cells))] = None
        text_columns[:, j] = cells
    return Table(numeric=check_range(numeric), categorical=text_columns)


def _column_positions(header: list[str], schema: TableSchema) -> dict[str, int]:
    """Where each model column is in the header; every one exactly once, nothing else."""
    names = header[1:] if header[0] == "" else header  # "": the index of DataFrame.to_csv()
    offset = len(header) - len(names)
    known = set(schema.feature_names)
    positions: dict[str, int] = {}
    for at, name in enumerate(names, start=offset):
        if name in positions:
            raise RequestError(422, f"column {name!r} appears twice in the CSV header", "duplicate_column")
        if name not in known:
            raise RequestError(422, f"unknown column {name[:80]!r} in the CSV header", "unknown_column")
        positions[name] = at
    for name in schema.feature_names:
        if name not in positions:
            raise RequestError(422, f"column {name!r} is missing from the CSV header "
                                    f"(leave a cell empty for a missing value)", "missing_column")
    return positions


def _numbers(rows: list[list[str]], lines: list[int], at: int, name: str) -> np.ndarray:
    """One numeric column as float64, NaN where the cell is an NA string."""
    cells = list(map(itemgetter(at), rows))
    missing = np.fromiter(map(NA_STRINGS.__contains__, cells), dtype=bool, count=len(cells))
    present = list(compress(cells, (~missing).tolist())) if missing.any() else cells
    try:  # the common case at C speed: plain decimal numbers, or missing
        if not set("".join(present)) - _PLAIN_NUMBER_CHARACTERS:
            values = np.full(len(cells), np.nan)
            values[~missing] = np.array(present, dtype=np.float64)
            return values
    except ValueError:
        pass  # a stray sign: cell by cell, for the error's row and line
    values = np.empty(len(cells))
    for index, cell in enumerate(cells):
        if cell in NA_STRINGS:
            values[index] = np.nan
            continue
        value = _number(cell)
        if value is None:
            raise RequestError(422, f"row {index} (line {lines[index]}), column {name!r}: "
                                    f"{cell[:40]!r} is not a number", "not_a_number")
        values[index] = value
    return values


def _number(cell: str) -> float | None:
    """The cell as pandas reads a float, or None if it is not a number to pandas."""
    if not cell or not set(cell) <= _NUMBER_CHARACTERS:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return None if value != value else value  # "NAN", "+nan": pandas refuses those spellings


class MlflowErrorResponse(ErrorResponse):
    error_code: str
    message: str


class MlflowProtocol(Adapter):
    """POST /invocations, GET /ping and GET /version, as `mlflow models serve` answers them."""

    tag = TAG

    def __init__(self) -> None:
        super().__init__()
        self.records: RecordsReader | None = None

    def bind(self, scorer: Scorer) -> None:
        super().bind(scorer)
        self.records = RecordsReader(scorer.model.schema, key="dataframe_records")

    def refuse(self, error: RequestError) -> tuple[int, bytes]:
        """MLflow's error document; every refusal of a body is a 400, as MLflow answers it."""
        status = 400 if error.status == 422 else error.status
        return status, error_body(error.message, error_code=error_code_for(error.status, error.reason))

    def invocations(self, call: Any) -> tuple[int, bytes]:
        """POST /invocations: a JSON format or a CSV table in, the class indices out."""
        schema, max_rows = self.scorer.model.schema, self.scorer.limits.max_rows
        if call.media_type in CSV_CONTENT_TYPES:
            table = parse_csv(call.body, schema=schema, max_rows=max_rows)
        else:  # dataframe_records typed as it is parsed; any other body read and checked as JSON
            table = self.records.read(call.body, max_rows=max_rows)
            if table is None:
                table = parse_mlflow_request(call.body, schema=schema, max_rows=max_rows)
        _, predicted = self.scorer.score(table)
        return 200, json.dumps({"predictions": predicted.tolist()}).encode()

    def ping(self, call: Any) -> tuple[int, bytes]:
        """GET /ping: 200 once the model is loaded, 404 before, as MLflow."""
        return (200 if self.scorer else 404), PING_BODY

    def version(self, call: Any) -> tuple[int, bytes]:
        """GET /version: the MLflow version that logged the served model, as bare text."""
        version = (self.scorer.model.info.get("mlflow_version") if self.scorer else None) or "unknown"
        return 200, version_body(version)

    def describe(self, handler: str, schemas: Schemas) -> dict:
        """The OpenAPI request body and answers of one handler."""
        if handler == "ping":
            return {"responses": {"200": answer("ready"), "404": answer("model not loaded")}}
        if handler == "version":
            return {"responses": {"200": answer("MLflow version")}}
        error = schemas.ref(MlflowErrorResponse)
        predictions = {"type": "object", "required": ["predictions"],
                       "properties": {"predictions": {"type": "array", "items": {"type": "integer"}}}}
        return {"requestBody": body({"type": "object", "additionalProperties": True}),
                "responses": {"200": answer("the class index of each row", predictions),
                              **{str(status): answer(text, error) for status, text in REFUSALS.items()
                                 if status != 422}}}

