"""The columnar request path: orjson and block reads take only what the strict readers accept, and read it alike."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from serving.errors import RequestError
from serving.protocols import decode, mlflow_scoring
from serving.protocols.decode import load_json_object, records_to_table
from serving.protocols.mlflow_scoring import parse_mlflow_request
from serving.protocols.native_codec import PredictRequestReader
from serving.protocols.records import RecordsReader
from serving.schema import CATEGORY, NUMBER, Feature, TableSchema

pytestmark = pytest.mark.unit

MIXED = TableSchema(features=(Feature("x", NUMBER), Feature("c", CATEGORY, ("a", "b")), Feature("y", NUMBER),
                              Feature("d", CATEGORY, ("u",))), class_names=("no", "yes"))


def outcome(read, *args, **kwargs) -> object:
    """What a reader returns (as comparable text), or the refusal it raises."""
    try:
        result = read(*args, **kwargs)
    except RequestError as error:
        return error.status, error.message, error.reason
    if hasattr(result, "numeric"):  # a Table: NaN compared as text
        return repr(result.numeric.tolist()), result.categorical.tolist(), result.numeric.shape
    return repr(result)


def strict_only(monkeypatch) -> None:
    """Turn the quick readers off: what remains is the standard library and the row-by-row reading."""
    monkeypatch.setattr(decode, "_quick_load", lambda body: None)
    monkeypatch.setattr(decode, "read_rows", lambda *args, **kwargs: None)
    monkeypatch.setattr(mlflow_scoring, "read_rows", lambda *args, **kwargs: None)
    monkeypatch.setattr(RecordsReader, "read", lambda *args, **kwargs: None)


# JSON text written by hand, so that objects can repeat keys and strings can hold colons or
# escaped colons: what orjson reads differently from the strict reader.
keys = st.sampled_from(["x", "y", "c", "d", "a:b", ":", "records", "\\u003a", "\\u003A"])
scalars = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70).map(str), st.floats(allow_nan=False).map(json.dumps),
    st.sampled_from(["null", "true", "NaN", "-Infinity", "1e400", '"a"', '"b:c"', '"\\u003a"', '"\\ud800"',
                     '"u"', '"\\u00e9:"', "1" + "0" * 30]))


def json_object(children) -> st.SearchStrategy[str]:
    return st.lists(st.tuples(keys, children), max_size=4).map(
        lambda pairs: "{" + ", ".join(f'"{key}": {value}' for key, value in pairs) + "}")


json_text = st.recursive(scalars, lambda children: st.one_of(
    json_object(children), st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")),
    max_leaves=12)
bodies = st.one_of(json_text.map(str.encode), json_object(json_text).map(str.encode))


@settings(max_examples=500, deadline=None)
@given(body=bodies)
@example(body=b'{"a": 1, "a": 2, "s": "\\u003a"}')  # a repeated key and an escaped colon: counts even
@example(body=b'{"records": [{"x": 1, "x": 2, "c": "a:b"}]}')
@example(body=b'{"x": 1, "y": "\\u003A", "y": 2}')
def test_the_orjson_reading_agrees_with_the_strict_reading(body):
    quick = outcome(load_json_object, body, example="E", values="V")
    with pytest.MonkeyPatch.context() as patch:
        strict_only(patch)
        assert quick == outcome(load_json_object, body, example="E", values="V")


@pytest.mark.parametrize("body", [b'{"a": 1, "a": 2, "s": "\\u003a"}', b'{"records": [{"x": 1, "x": 2}]}',
                                  b'{"o": {"k": "a:b:c", "k": 1}}'])
def test_repeated_keys_are_refused_whatever_the_strings_hold(body):
    with pytest.raises(RequestError) as info:
        load_json_object(body, example="E", values="V")
    assert (info.value.status, info.value.reason) == (400, "duplicate_keys")


@pytest.mark.parametrize("size", [1, 2000])  # 2000 records: over decode's 32 KB, counted by numpy
@pytest.mark.parametrize("repeat_at", ["first", "last"])
def test_a_repeated_key_in_any_record_of_a_large_body_is_refused(size, repeat_at):
    record = '{"x": 1.5, "c": "a", "y": null, "d": "u"}'
    twice = '{"x": 1.5, "c": "a", "y": null, "d": "u", "y": 2}'
    records = [record] * size
    records[0 if repeat_at == "first" else -1] = twice
    body = ('{"records": [' + ", ".join(records) + "]}").encode()
    with pytest.raises(RequestError) as info:
        PredictRequestReader(schema=MIXED, max_rows=10_000).read(body)
    assert (info.value.status, info.value.reason) == (400, "duplicate_keys")


values = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.none(), st.booleans(),
                   st.sampled_from(["a", "b", "zz", "", "1.5"]), st.just([1]), st.just({"k": 1}),
                   st.sampled_from([1e100, -1e100, 1.0000000000000002e100]))
records = st.lists(st.dictionaries(st.sampled_from(["x", "y", "c", "d", "e"]), values, max_size=5), min_size=1,
                   max_size=4)
good_records = st.lists(st.fixed_dictionaries({
    "x": st.one_of(st.floats(-1e9, 1e9), st.integers(-10**9, 10**9), st.none()),
    "c": st.one_of(st.sampled_from(["a", "b", "zz"]), st.none()), "y": st.floats(-5, 5),
    "d": st.one_of(st.just("u"), st.none())}), min_size=1, max_size=4)


@settings(max_examples=500, deadline=None)
@given(rows=st.one_of(records, good_records))
def test_block_reading_of_records_agrees_with_reading_them_one_by_one(rows):
    blocks = outcome(records_to_table, rows, schema=MIXED, max_rows=3)
    with pytest.MonkeyPatch.context() as patch:
        strict_only(patch)
        assert blocks == outcome(records_to_table, rows, schema=MIXED, max_rows=3)


split_columns = st.permutations(["x", "c", "y", "d"]).map(list) | st.sampled_from(
    [["x", "c", "y"], ["x", "c", "y", "d", "e"], ["x", "x", "y", "d"], ["x", "c", "y", 4]])


@settings(max_examples=400, deadline=None)
@given(columns=split_columns, data=st.lists(st.lists(values, min_size=3, max_size=5), max_size=4),
       good=good_records)
def test_block_reading_of_dataframe_split_agrees_with_reading_records(columns, data, good):
    rows = data if data and len(data[0]) != 4 else data + [[row[c] for c in ("x", "c", "y", "d")] for row in good]
    body = json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
    blocks = outcome(parse_mlflow_request, body, schema=MIXED, max_rows=3)
    with pytest.MonkeyPatch.context() as patch:
        strict_only(patch)
        assert blocks == outcome(parse_mlflow_request, body, schema=MIXED, max_rows=3)


# Bodies of records as text: keys may repeat, values may be anything JSON (or not) writes.
record_values = st.one_of(
    st.floats(-1e6, 1e6).map(json.dumps), st.integers(-2**70, 2**70).map(str),
    st.sampled_from(['"a"', '"b"', '"zz"', '"10:30"', '"\\u003a"', '"u"', "null", "true", "NaN", "1e400", "1e101",
                     "[1]", '{"k": 1}', '"1.5"', "1" + "0" * 30]))
record_text = st.lists(st.tuples(st.sampled_from(["x", "c", "y", "d", "d", "e"]), record_values), max_size=6).map(
    lambda pairs: "{" + ", ".join(f'"{key}": {value}' for key, value in pairs) + "}")
good_record_text = st.tuples(record_values, record_values, record_values, record_values).map(
    lambda v: f'{{"x": {v[0]}, "c": {v[1]}, "y": {v[2]}, "d": {v[3]}}}')
records_bodies = st.builds(
    lambda rows, head, tail: ("{" + head + '"records": [' + ", ".join(rows) + "]" + tail + "}").encode(),
    st.lists(st.one_of(good_record_text, good_record_text, record_text), max_size=4),
    st.sampled_from(["", '"features": null, ', '"features": [[1]], ', '"records": [], ']),
    st.sampled_from(["", ', "features": null', ', "records": []', ', "extra": 1']))


@settings(max_examples=800, deadline=None)
@given(body=records_bodies)
@example(body=b'{"records": [{"x": 1, "c": "a", "y": 2, "d": null, "x": 3}]}')
@example(body=b'{"records": [], "records": [{"x": 1, "c": "a", "y": 2, "d": null}]}')
@example(body=b'{"records": [{"x": 1, "c": "10:30", "y": 2, "d": "\\u003a", "y": 3}]}')
def test_typed_records_agree_with_the_strict_reading(body):
    """/predict's records: the typed reader takes only what the strict path takes, and reads it alike."""
    quick = outcome(PredictRequestReader(schema=MIXED, max_rows=3).read, body)
    with pytest.MonkeyPatch.context() as patch:
        strict_only(patch)
        assert quick == outcome(PredictRequestReader(schema=MIXED, max_rows=3).read, body)


@settings(max_examples=300, deadline=None)
@given(body=records_bodies.map(lambda body: body.replace(b'"records"', b'"dataframe_records"')
                               .replace(b'"features"', b'"params"')))
def test_typed_dataframe_records_agree_with_the_strict_reading(body):
    def read(body: bytes):
        table = RecordsReader(MIXED, key="dataframe_records").read(body, max_rows=3)
        return parse_mlflow_request(body, schema=MIXED, max_rows=3) if table is None else table

    quick = outcome(read, body)
    with pytest.MonkeyPatch.context() as patch:
        strict_only(patch)
        assert quick == outcome(read, body)


def test_typed_records_take_records_with_colons_in_text_and_a_null_features():
    reader = RecordsReader(MIXED, key="records", nullable=("features",))
    body = b'{"features": null, "records": [{"x": 1, "c": "10:30", "y": 2, "d": "a:b:c"}]}'
    table = reader.read(body, max_rows=3)
    assert table is not None and table.categorical.tolist() == [["10:30", "a:b:c"]]


def refuse_slow_path(*args: object, **kwargs: object) -> None:
    raise AssertionError("a plain wide body took the slow path")


def test_plain_records_take_the_quick_path_from_bytes_to_table(monkeypatch):
    monkeypatch.setattr(decode, "_strict_load", refuse_slow_path)
    monkeypatch.setattr(decode, "_records_one_by_one", refuse_slow_path)
    monkeypatch.setattr(decode, "read_rows", refuse_slow_path)  # /predict's records: the typed reader
    rows = [{"x": 1.5, "c": "a", "y": -2, "d": None}, {"x": None, "c": "new: text", "y": 0.25, "d": "u"}]
    table = PredictRequestReader(schema=MIXED, max_rows=10).read(json.dumps({"records": rows}).encode())
    assert math.isnan(table.numeric[1, 0])
    np.testing.assert_array_equal(table.numeric[:, 1], [-2.0, 0.25])
    assert table.numeric.dtype == np.float64 and table.categorical.tolist() == [["a", None], ["new: text", "u"]]
    split = {"dataframe_split": {"columns": ["d", "y", "c", "x"], "data": [[r[k] for k in "dycx"] for r in rows]}}
    again = parse_mlflow_request(json.dumps(split).encode(), schema=MIXED, max_rows=10)
    assert repr(again.numeric.tolist()) == repr(table.numeric.tolist())
    assert again.categorical.tolist() == table.categorical.tolist()


def test_text_seen_in_training_is_read_as_the_schemas_own_strings_and_other_text_as_read():
    """Known text comes back as the schema's interned strings (the encoder's lookups then skip
    hashing it); a body with text never seen is still read, by the decoder that takes any text."""
    schema = TableSchema(features=(Feature("plan", CATEGORY, ("basic", "premium")), Feature("x", NUMBER)),
                         class_names=("no", "yes"))
    reader = RecordsReader(schema, key="records")
    rows = [{"plan": "premium", "x": 1}, {"plan": None, "x": 2}]
    known = reader.read(json.dumps({"records": rows}).encode(), max_rows=3)
    assert known.categorical[0, 0] is sys.intern("premium") and known.categorical[1, 0] is None
    rows[1]["plan"] = "platinum"
    other = reader.read(json.dumps({"records": rows}).encode(), max_rows=3)
    assert other.categorical.tolist() == [["premium"], ["platinum"]]
    np.testing.assert_array_equal(other.numeric, [[1.0], [2.0]])
