"""Request parsing: every bad body becomes a RequestError with a 4xx and a sentence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import serving.protocols.native_codec
from serving.core import MAX_ABS_FEATURE
from serving.errors import RequestError
from serving.protocols.mlflow_scoring import parse_mlflow_request
from serving.protocols.native_codec import AnswerWriter, PredictRequestReader
from serving.schema import CATEGORY, NUMBER, Feature, Row, Table, TableSchema

pytestmark = pytest.mark.unit

# `features` bodies: rows of numbers, for a model whose columns are all numbers
NUMERIC = TableSchema(features=(Feature("x", NUMBER), Feature("y", NUMBER)), class_names=("a", "b"))


def format_predictions(probabilities: np.ndarray, predicted: np.ndarray, *, class_names: list[str],
                       model: dict[str, str]) -> bytes:
    """The /predict answer AnswerWriter writes for these class names and model."""
    return AnswerWriter(class_names=class_names, model=model).write(probabilities, predicted)


def parse(body: bytes, max_rows: int = 3) -> np.ndarray:
    """The rows of a /predict body as the service reads them (PredictRequestReader, as serving.protocols.native)."""
    table = PredictRequestReader(schema=NUMERIC, max_rows=max_rows).read(body)
    assert table.categorical.shape == (len(table), 0)
    return table.numeric


def strict_reader(max_rows: int = 3) -> PredictRequestReader:
    """The reader with its fast path for plain rows of numbers off, as for a model with text columns."""
    reader = PredictRequestReader(schema=NUMERIC, max_rows=max_rows)
    reader.plain_width = 0
    return reader


def test_rows_and_a_flat_row_are_accepted():
    np.testing.assert_array_equal(parse(b'{"features": [[1, 2.5], [3, 4]]}'), [[1, 2.5], [3, 4]])
    np.testing.assert_array_equal(parse(b'{"features": [1, 2]}'), [[1, 2]])
    assert parse(b'{"features": [1, 2]}').dtype == np.float64
    # The same bodies, read value by value, give the same rows.
    np.testing.assert_array_equal(strict_reader().read(b'{"features": [[1, 2.5], [3, 4]]}').numeric, [[1, 2.5], [3, 4]])
    np.testing.assert_array_equal(strict_reader().read(b'{"features": [1, 2]}').numeric, [[1, 2]])


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "empty"),
    (b"{", 400, "not valid JSON"),
    (b"[[1, 2]]", 400, "JSON object"),
    (b'{"rows": [[1, 2]]}', 400, "unknown key"),
    (b'{"features": [[1, 2]], "extra": 1}', 400, "unknown key"),
    (b"{}", 400, "exactly one of 'features' or 'records'"),
    (b'{"features": []}', 400, "non-empty"),
    (b'{"features": null}', 400, "non-empty"),
    (b'{"features": [[1, 2], [3]]}', 422, "row 1 has 1 values"),
    (b'{"features": [[1, 2, 3]]}', 422, "takes 2 features"),
    (b'{"features": [[1, "2"]]}', 422, "not a number"),
    (b'{"features": [[1, true]]}', 422, "not a number"),
    (b'{"features": [[1, null]]}', 422, "not a number"),
    (b'{"features": [[1, [2]]]}', 422, "not a number"),
    (b'{"features": [[1, NaN]]}', 400, "NaN is not a number"),
    (b'{"features": [[1, Infinity]]}', 400, "Infinity is not a number"),
    (b'{"features": [[1, -Infinity]]}', 400, "not a number"),
    (b'{"features": [[1, 1e400]]}', 422, "outside the accepted range"),
    (b'{"features": [[1, -1.5e100]]}', 422, "row 0 holds a value outside"),
    (b'{"features": [[1, 1' + b"0" * 400 + b']]}', 422, "64-bit float"),
    (b'{"features": [[1, 2]], "features": [[3, 4]]}', 400, "duplicate keys"),
    (b'{"features": [[1, 2], [1, 2], [1, 2], [1, 2]]}', 422, "limit of 3"),
    (b'{"features": [[1, 2], 3]}', 400, "row 1 is not a list"),
    (b'{"features": "ab"}', 400, "non-empty list"),
    (b"\xff\xfe{", 400, "UTF-8"),
    (b"[" * 100000 + b"]" * 100000, 400, "nested too deeply"),
])
def test_bad_bodies_raise_request_errors(body, status, words):
    with pytest.raises(RequestError) as info:
        parse(body)
    assert info.value.status == status
    assert words in info.value.message


PREDICT_VALUES = "features must be finite numbers, and record values finite numbers or null"
MLFLOW_VALUES = "the values of the rows must be finite numbers, or null for a missing value"


@pytest.mark.parametrize("body, literal", [
    (b'{"features": [[1, NaN]]}', "NaN"),
    (b'{"features": [[1, -Infinity]]}', "-Infinity"),
    (b'{"records": [{"x": Infinity, "y": null}]}', "Infinity"),
])
def test_a_nan_or_infinity_literal_is_refused_in_predict_words(body, literal):
    for reader in (PredictRequestReader(schema=NUMERIC, max_rows=3), strict_reader()):
        with pytest.raises(RequestError) as info:
            reader.read(body)
        assert (info.value.status, info.value.message, info.value.reason) == (
            400, f"{literal} is not a number: {PREDICT_VALUES}", "not_finite")


@pytest.mark.parametrize("body", [
    b'{"dataframe_split": {"columns": ["x", "y"], "data": [[1, NaN]]}}',
    b'{"dataframe_records": [{"x": NaN, "y": null}]}',
])
def test_a_nan_literal_is_refused_in_invocations_words(body):
    with pytest.raises(RequestError) as info:
        parse_mlflow_request(body, schema=NUMERIC, max_rows=3)
    assert (info.value.status, info.value.message) == (400, f"NaN is not a number: {MLFLOW_VALUES}")


@pytest.mark.parametrize("number", [b"9" * 5000, b"-" + b"9" * 4301])
@pytest.mark.parametrize("template", [b'{"features": [[1, %s]]}', b'{"records": [{"x": %s, "y": 1}]}',
                                      b'{"dataframe_records": [{"x": 1, "y": %s}]}'])
def test_a_number_of_too_many_digits_is_refused_in_plain_words(number, template):
    """Python's own message names sys.set_int_max_str_digits(), of no use to a client."""
    body = template % number
    with pytest.raises(RequestError) as info:
        if b"dataframe" in body:
            parse_mlflow_request(body, schema=NUMERIC, max_rows=3)
        else:
            parse(body)
    digits = len(number.lstrip(b"-"))
    assert (info.value.status, info.value.message, info.value.reason) == (
        400, f"the body holds a number of {digits} digits; numbers may have at most 4300 digits",
        "malformed_json")


def test_a_number_of_4300_digits_is_not_refused_for_its_digits():
    body = b'{"records": [{"x": 1' + b"0" * 4299 + b', "y": 1}]}'  # 4300 digits, beyond float64
    with pytest.raises(RequestError) as info:
        parse(body)
    assert info.value.status == 422 and "64-bit float" in info.value.message


def outcome(reader: PredictRequestReader, body: bytes) -> object:
    """What a reader makes of body: the rows, or the error it answers with."""
    try:
        return reader.read(body).numeric.tolist()
    except RequestError as error:
        return error.status, error.message, error.reason


numbers = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                    st.floats(allow_nan=False), st.sampled_from([1e100, -1e100, 1.0000000000000002e100]))
values = st.one_of(numbers, numbers, numbers, st.booleans(), st.none(), st.text(max_size=2),
                   st.lists(numbers, max_size=2), st.dictionaries(st.text(max_size=2), numbers, max_size=1))
documents = st.one_of(
    st.fixed_dictionaries({"features": st.lists(st.lists(values, max_size=3), max_size=4)}),
    st.fixed_dictionaries({"features": st.lists(values, max_size=3)}),
    st.dictionaries(st.sampled_from(["features", "extra"]), st.lists(st.lists(numbers, max_size=3), max_size=4)),
)
json_bodies = st.builds(lambda document, separators, indent: json.dumps(
    document, separators=separators, indent=indent).encode(),
    documents, st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]), st.sampled_from([None, 0, 1]))
# Text made only of what the fast path lets through, valid JSON or not.
number_soup = st.text(alphabet="0123456789+-.eE,[] \n", max_size=30).map(
    lambda text: b'{"features":' + text.encode() + b"}")
# The edges of what the fast path takes, in every run: rows over the limit, the range's bounds.
EDGE_BODIES = [b'{"features": [[1, 2], [1, 2], [1, 2], [1, 2]]}', b'{"features": [[1, 2], [3, 4], [5, 6]]}',
               b'{"features": [1, 1e100]}', b'{"features": [[1, 1.0000000000000002e100]]}',
               b'{"features": [[1, 2], [-1e100, 1.0000000000000002e100]]}', b'{"features": [[1, true]]}']


def with_edges(test):
    """The property test, run on EDGE_BODIES as well as on what hypothesis draws."""
    for body in EDGE_BODIES:
        test = example(body=body)(test)
    return test


@settings(max_examples=600, deadline=None)
@given(body=st.one_of(json_bodies, number_soup))
@with_edges
def test_the_fast_path_agrees_with_the_strict_path(body):
    assert outcome(PredictRequestReader(schema=NUMERIC, max_rows=3), body) == outcome(strict_reader(), body)


class StrictPathTaken(Exception):
    """Raised where the strict path starts, to show a body did not take the fast path."""


@pytest.mark.parametrize("document", [{"features": [[1, 2.5], [3e-5, -4]]}, {"features": [1, 2]}])
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_plain_bodies_take_the_fast_path(document, separators, monkeypatch):
    def strict_path(*args: object, **kwargs: object) -> dict:
        raise StrictPathTaken

    monkeypatch.setattr(serving.protocols.native_codec, "load_json_object", strict_path)
    body = json.dumps(document, separators=separators).encode()
    reader = PredictRequestReader(schema=NUMERIC, max_rows=3)
    np.testing.assert_array_equal(reader.read(body).numeric, np.array(document["features"], ndmin=2))
    with pytest.raises(StrictPathTaken):
        reader.read(body.replace(b"1", b"true", 1))


def plain_reading(body: bytes) -> list | None:
    """What a /predict body of `features` holds by a plain reading of its JSON, or None if it is
    not two finite numbers (not booleans) within MAX_ABS_FEATURE per row, 1 to 3 rows."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or set(document) != {"features"}:
        return None
    rows = document["features"]
    if not isinstance(rows, list) or not rows:
        return None
    rows = rows if isinstance(rows[0], list) else [rows]
    if len(rows) > 3 or any(not isinstance(row, list) or len(row) != 2 for row in rows):
        return None
    values = [value for row in rows for value in row]
    if any(type(value) not in (int, float) for value in values):
        return None
    try:
        numbers = [float(value) for value in values]
    except OverflowError:  # an integer beyond float64
        return None
    if not all(math.isfinite(number) and abs(number) <= MAX_ABS_FEATURE for number in numbers):
        return None
    return [[float(value) for value in row] for row in rows]


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(json_bodies, number_soup))
@with_edges
def test_features_bodies_are_read_as_a_plain_reading_of_their_json(body):
    """The reader takes exactly the bodies a plain reading finds valid, and gives their numbers."""
    expected = plain_reading(body)
    if expected is None:
        with pytest.raises(RequestError) as info:
            parse(body)
        assert info.value.status in (400, 422) and info.value.message
    else:
        assert parse(body).tolist() == expected


# /predict against the schema: rows of numbers for all-numeric models, records for any model

# Columns interleaved on purpose: the Table keeps numbers and text apart, each in schema order.
MIXED = TableSchema(features=(Feature("age", NUMBER), Feature("colour", CATEGORY, ("blue", "red")),
                              Feature("income", NUMBER), Feature("plan", CATEGORY, ("basic", "pro"))),
                    class_names=("no", "yes"))


def predict(document: object, schema: TableSchema = MIXED, max_rows: int = 3) -> Table:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return PredictRequestReader(schema=schema, max_rows=max_rows).read(body)


def same_table(got: Table, expected: Table) -> None:
    assert got.numeric.dtype == np.float64 and got.categorical.dtype == object
    np.testing.assert_array_equal(got.numeric, expected.numeric)  # NaN equals NaN here
    assert got.categorical.tolist() == expected.categorical.tolist()  # None stays None


GOOD = {"age": 40, "colour": "red", "income": 1.5e4, "plan": "pro"}
RECORDS = [GOOD, {"age": None, "colour": None, "income": -2.5, "plan": "unseen plan"},
           {"plan": "basic", "income": None, "colour": "", "age": 1e-3}]
EXPECTED = Table(numeric=np.array([[40.0, 1.5e4], [np.nan, -2.5], [1e-3, np.nan]]),
                 categorical=np.array([["red", "pro"], [None, "unseen plan"], ["", "basic"]], dtype=object))


def test_records_become_a_table_with_nan_and_none_for_null():
    table = predict({"records": RECORDS})
    same_table(table, EXPECTED)
    assert len(table) == 3 and table.categorical[1, 0] is None


def test_records_of_an_all_numeric_model_equal_its_rows():
    rows = predict({"features": [[1, 2.5], [3, -4]]}, NUMERIC)
    same_table(predict({"records": [{"x": 1, "y": 2.5}, {"y": -4, "x": 3}]}, NUMERIC), rows)
    same_table(rows, Table.from_numbers(np.array([[1, 2.5], [3, -4.0]])))
    assert rows.categorical.shape == (2, 0)
    same_table(predict({"records": [{"x": None, "y": 1}]}, NUMERIC), Table.from_numbers(np.array([[np.nan, 1.0]])))


def with_value(column: str, value: object, row: int = 1) -> dict:
    records = [dict(GOOD), dict(GOOD)]
    records[row][column] = value
    return {"records": records}


def without(column: str, row: int = 1) -> dict:
    records = [dict(GOOD), dict(GOOD)]
    del records[row][column]
    return {"records": records}


@pytest.mark.parametrize("document, status, words", [
    (with_value("age", "40"), 422, "row 1, column 'age': \"40\" is not a number"),
    (with_value("income", True, row=0), 422, "row 0, column 'income': true is not a number"),
    (with_value("age", [1]), 422, "column 'age': [1] is not a number"),
    (json.dumps(with_value("age", 1.5e100)).encode(), 422, "row 1 holds a value outside the accepted range"),
    (b'{"records": [{"age": 1e400, "colour": null, "income": 1, "plan": null}]}', 422, "row 0 holds a value outside"),
    ({"records": [{**GOOD, "income": -2e100}]}, 422, "row 0 holds a value outside the accepted range"),
    (with_value("colour", 3), 422, "row 1, column 'colour': 3 is not text"),
    (with_value("plan", False, row=0), 422, "row 0, column 'plan': false is not text"),
    (with_value("colour", {"a": "red"}), 422, "column 'colour'"),
    (without("plan"), 422, "row 1: column 'plan' is missing"),
    (without("age", row=0), 422, "row 0: column 'age' is missing (send null"),
    (with_value("colour2", "red"), 422, "row 1: unknown column 'colour2'"),
    ({"records": [{**{k: v for k, v in GOOD.items() if k != "age"}, "Age": 1}]}, 422, "column 'age' is missing"),
    ({"features": [[1, 2, 3, 4]]}, 422, "text columns"),
    ({"features": [[1, 2, 3, 4]], "records": [GOOD]}, 400, "exactly one of 'features' or 'records'"),
    ({"records": []}, 400, "'records' must be a non-empty list"),
    ({"records": None}, 400, "'records' must be a non-empty list"),
    ({"records": GOOD}, 400, "'records' must be a non-empty list"),
    ({"records": [GOOD, [40, "red", 1, "pro"]]}, 400, "record 1 is not an object"),
    ({"records": [GOOD] * 4}, 422, "4 rows is more than the limit of 3"),
    ({"records": [GOOD], "extra": 1}, 400, "unknown key(s) 'extra'"),
    ({}, 400, "exactly one of"),
    (b'{"records": [{"age": NaN, "colour": null, "income": 1, "plan": null}]}', 400, "NaN is not a number"),
    (b'{"records": [{"age": 1, "age": 2, "colour": null, "income": 1, "plan": null}]}', 400, "duplicate keys"),
])
def test_bad_records_raise_request_errors(document, status, words):
    with pytest.raises(RequestError) as info:
        predict(document)
    assert info.value.status == status
    assert words in info.value.message


def test_the_first_bad_row_is_the_one_named():
    records = [GOOD, {**GOOD, "colour": 1}, {**GOOD, "age": "x"}]
    with pytest.raises(RequestError, match="row 1, column 'colour'"):
        predict({"records": records})


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(json_bodies, number_soup))
@with_edges
def test_one_plain_row_is_the_row_read_would_give(body):
    reader = PredictRequestReader(schema=NUMERIC, max_rows=3)
    try:
        expected = reader.read(body)
    except RequestError as error:
        with pytest.raises(RequestError) as info:
            reader.read_row_or_table(body)
        assert (info.value.status, info.value.message) == (error.status, error.message)
        return
    got = reader.read_row_or_table(body)
    if type(got) is Row:
        same_table(Table.from_rows([got]), expected)
        assert len(expected) == 1
    else:
        same_table(got, expected)


@pytest.mark.parametrize("body", [
    b'{"records": [{"x": 1' + b"0" * 400 + b', "y": 1}]}',
    b'{"dataframe_records": [{"x": 1' + b"0" * 400 + b', "y": 1}]}',
])
def test_an_integer_too_large_for_a_float_is_a_422_in_records(body):
    with pytest.raises(RequestError) as info:
        if b"dataframe" in body:
            parse_mlflow_request(body, schema=NUMERIC, max_rows=3)
        else:
            PredictRequestReader(schema=NUMERIC, max_rows=3).read(body)
    assert info.value.status == 422 and "64-bit float" in info.value.message


# JSON values of every kind, integers within float64's range (larger ones: see the 422 test above).
record_values = st.one_of(st.none(), st.booleans(), st.text(max_size=3),
                          st.integers(min_value=-(2**1000), max_value=2**1000),
                          st.floats(allow_nan=False, allow_infinity=False),
                          st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.text(max_size=2), st.none(), max_size=1))
record_keys = st.sampled_from(["age", "colour", "income", "plan", "other"])
records_documents = st.one_of(
    st.fixed_dictionaries({"records": st.lists(st.dictionaries(record_keys, record_values), max_size=4)}),
    st.fixed_dictionaries({"records": st.lists(st.fixed_dictionaries(
        {"age": record_values, "colour": record_values, "income": record_values, "plan": record_values}),
        min_size=1, max_size=4)}),
    st.fixed_dictionaries({"records": record_values}),
)


@settings(max_examples=400, deadline=None)
@given(document=records_documents)
def test_any_records_body_is_a_table_or_a_request_error(document):
    try:
        table = predict(document)
    except RequestError as error:
        assert error.status in (400, 422) and error.message
        return
    records = document["records"]
    assert len(table) == len(records) and table.numeric.shape == (len(records), 2)
    for i, record in enumerate(records):
        for j, name in enumerate(MIXED.numeric):
            value = record[name]
            if value is None:
                assert np.isnan(table.numeric[i, j])
            else:
                assert type(value) in (int, float) and table.numeric[i, j] == float(value)
        assert table.categorical[i].tolist() == [record[name] for name in MIXED.categorical]


# /invocations: MLflow's four input formats carry the same rows as records

COLUMNS = ["age", "colour", "income", "plan"]


def mlflow(document: dict, max_rows: int = 3) -> Table:
    return parse_mlflow_request(json.dumps(document).encode(), schema=MIXED, max_rows=max_rows)


@pytest.mark.parametrize("document", [
    {"dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in RECORDS]}},
    {"dataframe_split": {"columns": COLUMNS[::-1], "data": [[r[c] for c in COLUMNS[::-1]] for r in RECORDS]}},
    {"dataframe_split": {"data": [[r[c] for c in COLUMNS] for r in RECORDS]}},
    {"dataframe_records": RECORDS},
    {"instances": RECORDS},
    {"instances": {c: [r[c] for r in RECORDS] for c in COLUMNS}},
    {"inputs": {c: [r[c] for r in RECORDS] for c in COLUMNS}},
    {"inputs": RECORDS, "params": {}},
    {"inputs": [[r[c] for c in COLUMNS] for r in RECORDS]},
])
def test_mlflow_formats_give_the_same_table_as_records(document):
    same_table(mlflow(document), predict({"records": RECORDS}))


@pytest.mark.parametrize("document, status, words", [
    ({"dataframe_split": {"columns": COLUMNS, "data": [[1, "red", "2", "pro"]]}}, 422, "row 0, column 'income'"),
    ({"dataframe_records": [GOOD, {**GOOD, "plan": 7}]}, 422, "row 1, column 'plan': 7 is not text"),
    ({"inputs": {"age": [1], "colour": ["red"], "income": [2]}}, 422, "column 'plan' is missing"),
    ({"instances": [{**GOOD, "extra": 1}]}, 422, "unknown column 'extra'"),
    ({"inputs": [[1, "red", 2]]}, 422, "row 0 has 3 values; the model takes 4 features"),
    ({"inputs": {"age": [1, 2], "colour": ["red"], "income": [1, 2], "plan": ["a", "b"]}}, 400, "same length"),
    ({"dataframe_records": []}, 400, "no rows"),
    ({"dataframe_records": [GOOD] * 4}, 422, "limit of 3"),
    ({"dataframe_records": [GOOD], "inputs": [GOOD]}, 400, "exactly one of"),
    ({"records": [GOOD]}, 400, "exactly one of"),
])
def test_bad_mlflow_bodies_raise_request_errors(document, status, words):
    with pytest.raises(RequestError) as info:
        mlflow(document)
    assert info.value.status == status
    assert words in info.value.message


def reference_answer(probabilities, predicted, *, class_names, model) -> dict:
    """The answer format_predictions must write, built the plain way."""
    return {"predictions": [{"label": class_names[i], "class_index": i,
                             "probabilities": dict(zip(class_names, row))}
                            for i, row in zip(predicted.tolist(), probabilities.tolist())],
            "model": model}


@pytest.mark.parametrize("class_names", [["a", "b"], ["setosa", "versicolor", "virginica"],
                                         ['say "hi"', "naïve", "back\\slash", "tab\t", "%d"]])
def test_format_predictions_writes_exact_probabilities(class_names):
    rng = np.random.default_rng(len(class_names))
    probabilities = rng.dirichlet(np.full(len(class_names), 0.3), size=257)
    probabilities[0] = np.eye(len(class_names))[-1]  # exact 0s and 1s as well
    predicted = probabilities.argmax(axis=1)
    model = {"name": "M", "version": "7"}
    body = format_predictions(probabilities, predicted, class_names=class_names, model=model)
    assert json.loads(body) == reference_answer(probabilities, predicted, class_names=class_names, model=model)


def test_format_predictions_keeps_order_and_names():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    body = json.loads(format_predictions(probabilities, probabilities.argmax(axis=1), class_names=["a", "b"],
                                         model={"name": "M", "version": "1"}))
    assert [p["label"] for p in body["predictions"]] == ["a", "b"]
    assert [p["class_index"] for p in body["predictions"]] == [0, 1]
    assert body["predictions"][1]["probabilities"] == {"a": 0.2, "b": 0.8}
    assert body["model"] == {"name": "M", "version": "1"}


@pytest.mark.parametrize("class_names", [["a", "b"], ["setosa", "versicolor", "virginica"],
                                         ['say "hi"', "naïve", "%d", "100%", "%s"]])
def test_the_one_row_answer_is_the_answer_to_one_row(class_names):
    rng = np.random.default_rng(len(class_names))
    writer = AnswerWriter(class_names=class_names, model={"name": "M%s", "version": "7%"})
    for probabilities in [*rng.dirichlet(np.full(len(class_names), 0.3), size=50), np.eye(len(class_names))[-1]]:
        predicted = int(probabilities.argmax())
        expected = writer.write(probabilities[None, :], np.array([predicted]))
        assert writer.write_row(probabilities.tolist(), predicted) == expected
        assert json.loads(expected) == reference_answer(probabilities[None, :], np.array([predicted]),
                                                        class_names=class_names, model={"name": "M%s", "version": "7%"})
