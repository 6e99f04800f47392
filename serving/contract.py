"""The HTTP contract of /predict and /invocations: parse and check a request body, shape the answer."""

from __future__ import annotations

import json
import sys
from itertools import chain

import numpy as np
import orjson

from serving.schema import Table, TableSchema

# Far beyond any real feature, and far enough inside float64's range that scaling and the
# dot product cannot overflow into inf - inf = NaN probabilities.
MAX_ABS_FEATURE = 1e100


class RequestError(ValueError):
    """A bad request: the status to answer with and one readable sentence."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # a short label for metrics


class _NotFinite(Exception):
    """A NaN or Infinity literal met by the JSON parser; load_json_object words its refusal."""

    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _reject_constant(literal: str) -> float:
    raise _NotFinite(literal)


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise RequestError(400, "the JSON object has duplicate keys", "duplicate_keys")
    return dict(pairs)


def _int_within_limit(digits: str) -> int:
    """int(digits), or the refusal of a number longer than Python converts (4300 digits by default)."""
    limit = sys.get_int_max_str_digits()
    count = len(digits.lstrip("-"))
    if limit and count > limit:
        raise RequestError(400, f"the body holds a number of {count} digits; "
                                f"numbers may have at most {limit} digits", "malformed_json")
    return int(digits)


def _digits_refusal(body: bytes) -> RequestError | None:
    """The refusal of the first integer in body longer than int() converts, if any.

    body is parsed again, with a parse_int that counts digits: only on that refusal, so that
    bodies which parse cost no hook call per integer.
    """
    try:
        json.loads(body, parse_int=_int_within_limit)
    except RequestError as refusal:
        return refusal
    except (ValueError, RecursionError):
        return None
    return None


def load_json_object(body: bytes, *, example: str, values: str) -> dict:
    """Decode a body that must be one JSON object; reject NaN, duplicates and deep nesting.

    example is a body to suggest; values says what the route's values must be, for the refusal
    of a NaN or Infinity literal ("NaN is not a number: <values>").
    """
    if not body:
        raise RequestError(400, f"the request body is empty; send {example}", "empty_body")
    try:
        document = json.loads(body, parse_constant=_reject_constant,
                              object_pairs_hook=_object_without_duplicates)
    except RequestError:
        raise
    except _NotFinite as constant:
        raise RequestError(400, f"{constant.literal} is not a number: {values}", "not_finite") from None
    except UnicodeDecodeError:
        raise RequestError(400, "the request body is not valid UTF-8", "bad_encoding") from None
    except RecursionError:
        raise RequestError(400, "the JSON document is nested too deeply", "malformed_json") from None
    except json.JSONDecodeError as error:
        raise RequestError(400, f"the request body is not valid JSON ({error})", "malformed_json") from None
    except ValueError as error:
        # json.loads' one other ValueError: an integer of more digits than int() converts, in
        # Python's words, which advise sys.set_int_max_str_digits(), of no use to a client.
        raise _digits_refusal(body) or RequestError(
            400, f"the request body is not valid JSON ({error})", "malformed_json") from None
    if not isinstance(document, dict):
        raise RequestError(400, f"the body must be a JSON object like {example}", "not_an_object")
    return document


def rows_to_array(rows: list, *, n_features: int, max_rows: int) -> np.ndarray:
    """Check a list of rows of numbers and return it as a (rows, n_features) float64 array."""
    check_row_count(len(rows), max_rows=max_rows)
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise RequestError(400, f"row {index} is not a list of numbers", "not_a_row")
        if len(row) != n_features:
            raise RequestError(422, f"row {index} has {len(row)} values; the model takes {n_features} features", "wrong_length")
        for value in row:
            # bool is an int subclass and numpy would turn strings into numbers: check types.
            kind = type(value)
            if kind is not float and kind is not int:
                raise RequestError(422, f"row {index} holds {json.dumps(value)[:40]}, which is not a number", "not_a_number")
    try:
        X = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise RequestError(422, "a feature value does not fit a 64-bit float", "not_finite") from None
    return check_range(X)


def check_row_count(count: int, *, max_rows: int) -> None:
    """Refuse a request of more than max_rows rows."""
    if count > max_rows:
        raise RequestError(422, f"{count} rows is more than the limit of {max_rows} per request", "too_many_rows")


def check_range(X: np.ndarray) -> np.ndarray:
    """X itself, unless a value is beyond MAX_ABS_FEATURE (or infinite); NaN means missing."""
    within = ~(np.abs(X) > MAX_ABS_FEATURE)  # False for inf, True for NaN
    if not within.all():
        bad = int(np.argmin(within.all(axis=1)))
        raise RequestError(422, f"row {bad} holds a value outside the accepted range "
                                f"-{MAX_ABS_FEATURE:g} to {MAX_ABS_FEATURE:g}", "out_of_range")
    return X


_PLAIN_HEAD = b'{"features":'
_JSON_SPACE = b" \t\r\n"
# All a list of lists of JSON numbers is made of: anything else (a quote, a letter of
# true/false/null/NaN, a brace) sends the body to the strict path.
_NUMBER_LIST_BYTES = b"0123456789+-.eE,[]" + _JSON_SPACE


def _plain_rows(body: bytes) -> list | None:
    """The decoded `features` of a plain `{"features": [[numbers...], ...]}` body, flat row or not,
    as a non-empty list of rows (unchecked); None if the body is anything else."""
    text = body.strip(_JSON_SPACE)
    if not text.startswith(_PLAIN_HEAD) or not text.endswith(b"}"):
        return None
    values = text[len(_PLAIN_HEAD):-1]
    if values.translate(None, _NUMBER_LIST_BYTES):
        return None
    try:  # orjson refuses invalid JSON, NaN, and numbers too large for a double
        rows = orjson.loads(values)
    except orjson.JSONDecodeError:
        return None
    if type(rows) is not list or not rows:
        return None
    return rows if type(rows[0]) is list else [rows]  # one flat row is one row


def _plain_row(row: list, *, n_features: int) -> list | None:
    """row, if it holds n_features numbers within MAX_ABS_FEATURE; checked in Python, which for
    one row is quicker than numpy's per-call overhead."""
    try:  # abs() of a list: TypeError
        if type(row) is list and len(row) == n_features and max(map(abs, row)) <= MAX_ABS_FEATURE:
            return row
    except TypeError:
        pass
    return None


def _plain_array(rows: list, *, n_features: int) -> np.ndarray | None:
    """The rows as a (rows, n_features) float64 array, if each is n_features numbers within range."""
    try:  # a row that is a number (TypeError), a value that is a list (TypeError, ValueError)
        if set(map(len, rows)) != {n_features}:
            return None
        X = np.fromiter(chain.from_iterable(rows), dtype=np.float64,
                        count=len(rows) * n_features).reshape(len(rows), n_features)
    except (TypeError, ValueError):
        return None
    # orjson gives finite numbers only: no NaN to let through here.
    return None if (np.abs(X) > MAX_ABS_FEATURE).any() else X


def features_to_array(rows: object, *, n_features: int, max_rows: int) -> np.ndarray:
    """The value of `features`: a list of rows of numbers, or one flat row."""
    if not isinstance(rows, list) or not rows:
        raise RequestError(400, "'features' must be a non-empty list of rows", "empty_features")
    if not isinstance(rows[0], list):
        rows = [rows]  # one flat row
    return rows_to_array(rows, n_features=n_features, max_rows=max_rows)


PREDICT_KEYS = ("features", "records")
_PREDICT_EXAMPLE = '{"features": [[...], ...]} or {"records": [{...}, ...]}'
# What /predict's values must be, as its refusal of a NaN or Infinity literal says.
_PREDICT_VALUES = "features must be finite numbers, and record values finite numbers or null"


class PredictRequestReader:
    """Reads /predict bodies for one model: what every request would work out, worked out once."""

    def __init__(self, *, schema: TableSchema, max_rows: int) -> None:
        self.schema = schema
        self.max_rows = max_rows
        # Plain rows of numbers only make sense when every column is a number.
        self.plain_width = len(schema.features) if schema.all_numeric else 0

    def read(self, body: bytes) -> Table:
        """A /predict body, `{"features": [[numbers]]}` or `{"records": [{column: value}]}`, as a Table."""
        rows = self.read_row_or_table(body)
        return Table.from_numbers(np.array([rows], dtype=np.float64)) if type(rows) is list else rows

    def read_row_or_table(self, body: bytes) -> list | Table:
        """read(), except that a body of one plain row of numbers gives that row: the list of its
        numbers, checked as read() checks them, for predictors that take one row as is."""
        if self.plain_width:
            # The fast path for the common case, a plain {"features": [[numbers...], ...]}: it takes
            # only bodies the strict path below accepts, and gives the same rows; anything else goes
            # on to the strict path, which finds and words every error.
            rows = _plain_rows(body)
            if rows is not None:
                if len(rows) == 1:
                    row = _plain_row(rows[0], n_features=self.plain_width)
                    if row is not None:
                        check_row_count(1, max_rows=self.max_rows)
                        return row
                else:
                    X = _plain_array(rows, n_features=self.plain_width)
                    if X is not None:
                        check_row_count(len(X), max_rows=self.max_rows)
                        return Table.from_numbers(X)
        document = load_json_object(body, example=_PREDICT_EXAMPLE, values=_PREDICT_VALUES)
        extra = sorted(set(document) - set(PREDICT_KEYS))
        if extra:
            raise RequestError(400, f"unknown key(s) {', '.join(map(repr, extra))}: only 'features' or 'records' is accepted", "unknown_keys")
        return table_from_values(features=document.get("features"), records=document.get("records"),
                                 given=tuple(document), schema=self.schema, max_rows=self.max_rows)


def table_from_values(*, features: object, records: object, given: tuple[str, ...] = (),
                      schema: TableSchema, max_rows: int) -> Table:
    """The rows of a /predict request from its decoded `features` or `records` value.

    `given` names the keys the body held (a null value counts as given when it is the only key,
    so `{"features": null}` is refused; BentoML's clients send the unused argument as null).
    """
    present = [key for key, value in (("features", features), ("records", records)) if value is not None]
    if not present and len(given) == 1:  # {"features": null}: the error says what the key needs
        present = list(given)
    if len(present) != 1:
        raise RequestError(400, "the body needs exactly one of 'features' or 'records'", "missing_features")
    if present[0] == "records":
        return records_to_table(records, schema=schema, max_rows=max_rows)
    if not schema.all_numeric:
        raise RequestError(422, "this model has text columns: send rows as {\"records\": [{\"column\": value, ...}]}", "needs_records")
    return Table.from_numbers(features_to_array(features, n_features=len(schema.features), max_rows=max_rows))


def records_to_table(records: object, *, schema: TableSchema, max_rows: int) -> Table:
    """Rows given as {column: value} objects: numbers for numeric columns, text for the others,
    null for a missing value (imputed as in training)."""
    if not isinstance(records, list) or not records:
        raise RequestError(400, "'records' must be a non-empty list of objects", "empty_features")
    check_row_count(len(records), max_rows=max_rows)
    numeric_names, text_names = schema.numeric, schema.categorical
    numeric = np.empty((len(records), len(numeric_names)))
    text = np.empty((len(records), len(text_names)), dtype=object)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(400, f"record {i} is not an object of column: value", "not_a_row")
        if len(record) != len(schema.features) or not all(name in record for name in schema.feature_names):
            _raise_column_mismatch(i, record, schema)
        for j, name in enumerate(numeric_names):
            value = record[name]
            kind = type(value)
            if kind is float or kind is int:
                try:
                    numeric[i, j] = value
                except OverflowError:
                    raise RequestError(422, f"row {i}, column {name!r}: the value does not fit a 64-bit float", "not_finite") from None
            elif value is None:
                numeric[i, j] = np.nan
            else:
                raise RequestError(422, f"row {i}, column {name!r}: {json.dumps(value)[:40]} is not a number", "not_a_number")
        for j, name in enumerate(text_names):
            value = record[name]
            if value is not None and type(value) is not str:
                raise RequestError(422, f"row {i}, column {name!r}: {json.dumps(value)[:40]} is not text", "not_text")
            text[i, j] = value
    return Table(numeric=check_range(numeric), categorical=text)


def _raise_column_mismatch(index: int, record: dict, schema: TableSchema) -> None:
    missing = [name for name in schema.feature_names if name not in record]
    if missing:
        raise RequestError(422, f"row {index}: column {missing[0]!r} is missing (send null for a missing value)", "missing_column")
    unknown = [name for name in record if name not in schema.feature_names]
    raise RequestError(422, f"row {index}: unknown column {unknown[0]!r}", "unknown_column")


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


class AnswerWriter:
    """Writes the /predict answer of one model: one prediction per row, in order.

    Row by row it reads {"label": ..., "class_index": ..., "probabilities": {name: p, ...}}.
    It is assembled from byte pieces rather than dicts: for 1000 rows, building and encoding
    dicts took longer than all the rest of the request. orjson writes each float as its
    shortest exact repr, so clients read back the very same doubles. The pieces around the
    numbers (and the model block) are made once per model.
    """

    def __init__(self, *, class_names: list[str], model: dict[str, str]) -> None:
        keys = [orjson.dumps(name) for name in class_names]
        # What surrounds the numbers in a row: a prefix per class, then separators.
        prefixes = [b'{"label":%s,"class_index":%d,"probabilities":{%s:' % (key, index, keys[0])
                    for index, key in enumerate(keys)]
        self._prefixes = np.array(prefixes, dtype=object)
        self._separators = [b",%s:" % key for key in keys[1:]] + [b"}},"]
        self._tail = b'],"model":' + orjson.dumps(model) + b"}"
        # The whole answer to one row, per predicted class, with a %s for each probability:
        # one bytes formatting writes it. The text between the numbers has its % doubled.
        between = [*self._separators[:-1], self._separators[-1][:-1] + self._tail]  # no last comma
        self._one_row = [b"%s".join(part.replace(b"%", b"%%") for part in [b'{"predictions":[' + prefix, *between])
                         for prefix in prefixes]

    def write_row(self, probabilities: list[float], predicted: int) -> bytes:
        """The answer to one row: write() of [probabilities] and [predicted], from Python floats
        (orjson writes a float and a numpy float64 alike)."""
        return self._one_row[predicted] % tuple(orjson.dumps(probabilities)[1:-1].split(b","))

    def write(self, probabilities: np.ndarray, predicted: np.ndarray) -> bytes:
        rows, n_classes = probabilities.shape
        numbers = orjson.dumps(probabilities.ravel(), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
        if rows == 1:  # one row, the usual request
            return self._one_row[predicted[0]] % tuple(numbers)
        # Row i is: the prefix of its class, p0, separator, p1, ..., "}},". Filled by slices.
        width = 2 * n_classes + 1
        pieces: list[bytes] = [b""] * (rows * width)
        pieces[0::width] = self._prefixes[predicted].tolist()
        for k in range(n_classes):
            pieces[1 + 2 * k::width] = numbers[k::n_classes]
            pieces[2 + 2 * k::width] = [self._separators[k]] * rows
        predictions = b"".join(pieces)[:-1]  # less the last row's comma
        return b'{"predictions":[' + predictions + self._tail


def format_predictions(
    probabilities: np.ndarray, predicted: np.ndarray, *, class_names: list[str], model: dict[str, str]
) -> bytes:
    """The JSON answer of AnswerWriter, for a model whose writer is not at hand."""
    return AnswerWriter(class_names=class_names, model=model).write(probabilities, predicted)


def error_body(message: str) -> bytes:
    """The JSON error answer."""
    return json.dumps({"error": message}).encode()
