"""What the JSON protocols share: a strict JSON reader, and decoded rows or records as a checked Table."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from types import NoneType

import numpy as np
import orjson

from serving.core import check_range, check_row_count
from serving.errors import RequestError
from serving.schema import Table, TableSchema


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
    """The refusal of the first integer in body longer than int() converts, if any (body parsed again)."""
    try:
        json.loads(body, parse_int=_int_within_limit)
    except RequestError as refusal:
        return refusal
    except (ValueError, RecursionError):
        return None
    return None


def load_json_object(body: bytes, *, example: str, values: str) -> dict:
    """A body that must be one JSON object; NaN, duplicates and deep nesting refused in the route's words."""
    document = _quick_load(body)
    if document is None:  # not plainly valid to orjson, or unsure: the strict reader finds and words it
        document = _strict_load(body, example=example, values=values)
    if not isinstance(document, dict):
        raise RequestError(400, f"the body must be a JSON object like {example}", "not_an_object")
    return document


def _quick_load(body: bytes) -> object | None:
    """The document as orjson reads it, when it is certainly what _strict_load would accept; else None."""
    # orjson refuses NaN, lone surrogates, numbers beyond float64 and invalid UTF-8: the strict
    # reader words those. Two things it reads otherwise are caught by writing the document back:
    # - a repeated key, which it keeps once: a colon in JSON is a key's separator or a character
    #   of a string, so unless a string escapes one (\u003a), the body holds as many colons as
    #   the written document only when no key was repeated;
    # - an integer beyond 64 bits, which it reads as a float: written back, such a float (as any
    #   beyond 1e16) has an exponent "e+"; an "e+" sends the body to the strict reader (a large
    #   float or such text in a string only costs the time).
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    written = orjson.dumps(document)
    if count_byte(body, b":") != count_byte(written, b":") or _exponent_plus(written) \
            or (b"\\" in body and b"\\u003" in body):
        return None
    return document


# Above this size numpy's scans beat bytes' own (which cost less to call).
_LARGE = 32 * 1024


def count_byte(text: bytes, byte: bytes) -> int:
    """text.count(byte), for one byte (10x quicker on a 500 KB body)."""
    if len(text) < _LARGE:
        return text.count(byte)
    return int(np.count_nonzero(np.frombuffer(text, dtype=np.uint8) == byte[0]))


def _exponent_plus(text: bytes) -> bool:
    """True if text holds "e+"."""
    if len(text) < _LARGE:
        return b"e+" in text
    array = np.frombuffer(text, dtype=np.uint8)
    plus = np.flatnonzero(array == ord("+"))  # rare, unlike "e"
    return bool((array[plus - 1] == ord("e")).any())


def _strict_load(body: bytes, *, example: str, values: str) -> object:
    """The standard library's reading of body, with every refusal worded for the client."""
    if not body:
        raise RequestError(400, f"the request body is empty; send {example}", "empty_body")
    try:
        return json.loads(body, parse_constant=_reject_constant,
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


def records_to_table(records: object, *, schema: TableSchema, max_rows: int) -> Table:
    """Rows as {column: value}: numbers, text for text columns, null for a missing value."""
    if not isinstance(records, list) or not records:
        raise RequestError(400, "'records' must be a non-empty list of objects", "empty_features")
    check_row_count(len(records), max_rows=max_rows)
    table = read_rows(records, dict, numeric=schema.numeric, text=schema.categorical,
                      width=len(schema.features))
    return table if table is not None else _records_one_by_one(records, schema=schema)


def _getter(keys: Sequence) -> Callable[[object], tuple]:
    """itemgetter(*keys), always giving a tuple (itemgetter of one key gives the bare value)."""
    if len(keys) == 1:
        key = keys[0]
        return lambda row: (row[key],)
    return itemgetter(*keys) if keys else (lambda row: ())


_NUMBER_TYPES = frozenset({int, float, NoneType})
_TEXT_TYPES = frozenset({str, NoneType})


def read_rows(rows: list, kind: type, *, numeric: Sequence, text: Sequence, width: int) -> Table | None:
    """Rows (dicts by column name, or lists by position) as a Table, read a block of columns at a
    time by the keys in numeric and text; None when a row needs reading one by one."""
    # Each step is one call over every row or value (C loops, no Python per value); anything
    # unusual (a missing or unknown column, a value of another type, an integer beyond float64)
    # returns None, and the caller's row-by-row reading finds the first fault and words it.
    if set(map(type, rows)) != {kind} or set(map(len, rows)) != {width}:
        return None
    try:
        numbers = list(map(_getter(numeric), rows))
        texts = list(map(_getter(text), rows))
    except (KeyError, IndexError):
        return None
    if not set(map(type, chain.from_iterable(numbers))) <= _NUMBER_TYPES \
            or not set(map(type, chain.from_iterable(texts))) <= _TEXT_TYPES:
        return None
    try:  # None becomes NaN
        numeric_block = np.array(numbers, dtype=np.float64).reshape(len(rows), len(numeric))
    except OverflowError:
        return None
    text_block = np.array(texts, dtype=object).reshape(len(rows), len(text))
    return Table(numeric=check_range(numeric_block), categorical=text_block)


def _records_one_by_one(records: list, *, schema: TableSchema) -> Table:
    """records_to_table's careful reading: the first fault in row order, in the client's words."""
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
