"""The JSON of /predict: `{"features"}` / `{"records"}` bodies read into a Table, and the answer written."""

# Plain rows of numbers take a fast path (orjson, checked in bulk) that takes only bodies the strict
# path accepts, with the same rows; the strict path finds and words every error.

from __future__ import annotations

from itertools import chain

import numpy as np
import orjson

from serving.core import check_row_count, first_out_of_range, within_range
from serving.errors import RequestError
from serving.protocols.decode import load_json_object, records_to_table, rows_to_array
from serving.protocols.records import RecordsReader
from serving.schema import Row, Table, TableSchema

_PLAIN_HEAD = b'{"features":'
_JSON_SPACE = b" \t\r\n"
# All a list of lists of JSON numbers is made of: anything else (a quote, a letter of
# true/false/null/NaN, a brace) sends the body to the strict path.
_NUMBER_LIST_BYTES = b"0123456789+-.eE,[]" + _JSON_SPACE


def _plain_rows(body: bytes) -> list | None:
    """The rows (unchecked) of a plain `{"features": [[numbers...], ...]}` body, flat row or not; else None."""
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
    """row, if it holds n_features numbers within MAX_ABS_FEATURE (in Python: quicker than numpy for one row)."""
    try:  # abs() of a list: TypeError
        if type(row) is list and len(row) == n_features and within_range(row):
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
    return X if first_out_of_range(X) is None else None


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
        self.records = RecordsReader(schema, key="records", nullable=("features",))

    def read(self, body: bytes) -> Table:
        """A /predict body, `{"features": [[numbers]]}` or `{"records": [{column: value}]}`, as a Table."""
        rows = self.read_row_or_table(body)
        return Table.from_rows([rows]) if type(rows) is Row else rows

    def read_row_or_table(self, body: bytes) -> Row | Table:
        """read(), but one row (of numbers, or one record) comes back as a Row, checked as read() checks it."""
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
                        return Row(row)
                else:
                    X = _plain_array(rows, n_features=self.plain_width)
                    if X is not None:
                        check_row_count(len(X), max_rows=self.max_rows)
                        return Table.from_numbers(X)
        # Records: typed by the schema as they are parsed (serving/protocols/records.py).
        rows = self.records.read_row_or_table(body, max_rows=self.max_rows)
        if rows is not None:
            return rows
        document = load_json_object(body, example=_PREDICT_EXAMPLE, values=_PREDICT_VALUES)
        extra = sorted(set(document) - set(PREDICT_KEYS))
        if extra:
            raise RequestError(400, f"unknown key(s) {', '.join(map(repr, extra))}: only 'features' or 'records' is accepted", "unknown_keys")
        return table_from_values(features=document.get("features"), records=document.get("records"),
                                 given=tuple(document), schema=self.schema, max_rows=self.max_rows)


def table_from_values(*, features: object, records: object, given: tuple[str, ...] = (),
                      schema: TableSchema, max_rows: int) -> Table:
    """The rows of a /predict request from its decoded `features` or `records` value."""
    # given: the body's keys. A null counts as given when alone, so {"features": null} is refused;
    # BentoML's clients send the unused argument as null.
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


class AnswerWriter:
    """Writes one model's /predict answer: per row {"label", "class_index", "probabilities": {name: p}}."""

    # Byte pieces made once per model, not dicts: for 1000 rows, dicts took longer than the rest of
    # the request. orjson writes each float's shortest exact repr: clients read the same doubles.

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
        """write() of one row from Python floats (orjson writes a float and a numpy float64 alike)."""
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
