"""serving.protocols.mlflow_scoring: CSV bodies, /ping, /version and error bodies as `mlflow models serve` has them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.errors import RequestError
from serving.protocols.mlflow_scoring import (
    CSV_CONTENT_TYPES,
    NA_STRINGS,
    PING_BODY,
    PING_HEADERS,
    VERSION_HEADERS,
    error_body,
    error_code_for,
    parse_mlflow_request,
    parse_csv,
    version_body,
)
from serving.schema import CATEGORY, NUMBER, Feature, Table, TableSchema
from tests.unit.conftest import table_from_frame

pytestmark = pytest.mark.unit

IRIS = TableSchema(features=tuple(Feature(name, NUMBER) for name in (
    "sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")),
    class_names=("setosa", "versicolor", "virginica"))
# Columns interleaved on purpose: the Table keeps numbers and text apart, each in schema order.
MIXED = TableSchema(features=(Feature("age", NUMBER), Feature("colour", CATEGORY, ("blue", "red")),
                              Feature("income", NUMBER), Feature("plan", CATEGORY, ("basic", "pro"))),
                    class_names=("no", "yes"))


def parse(text: str | bytes, schema: TableSchema = MIXED, max_rows: int = 5) -> Table:
    body = text.encode() if isinstance(text, str) else text
    return parse_csv(body, schema=schema, max_rows=max_rows)


def rejected(text: str | bytes, schema: TableSchema = MIXED, max_rows: int = 5) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(text, schema, max_rows)
    return caught.value


def same_table(got: Table, expected: Table) -> None:
    assert got.numeric.dtype == np.float64 and got.categorical.dtype == object
    assert got.numeric.shape == expected.numeric.shape
    assert got.categorical.shape == expected.categorical.shape
    np.testing.assert_array_equal(got.numeric, expected.numeric)  # NaN equals NaN here
    assert got.categorical.tolist() == expected.categorical.tolist()  # None stays None


def to_csv(columns: list[str], rows: list[list[object]], *, line_end: str = "\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def as_split(columns: list[str], rows: list[list[object]], schema: TableSchema) -> Table:
    body = json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
    return parse_mlflow_request(body, schema=schema, max_rows=100)


def as_mlflow_reads_it(text: str, schema: TableSchema) -> Table:
    """What `mlflow models serve` builds from the body: pandas.read_csv with the signature's dtypes."""
    dtypes = {f.name: np.float64 if f.type == NUMBER else object for f in schema.features}
    return table_from_frame(pd.read_csv(io.StringIO(text), dtype=dtypes), schema)


# All-numeric schema

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_numeric_columns_in_any_order_equal_dataframe_split(order):
    columns = [IRIS.feature_names[i] for i in order]
    rows = [[row[i] for i in order] for row in IRIS_ROWS]
    text = to_csv(columns, rows)
    table = parse(text, IRIS)
    same_table(table, Table.from_numbers(np.array(IRIS_ROWS)))
    same_table(table, as_split(columns, rows, IRIS))
    same_table(table, as_mlflow_reads_it(text, IRIS))


def test_crlf_bom_quotes_blank_lines_and_blanks_around_numbers():
    text = ('\ufeff"petal width (cm)",sepal length (cm),"sepal width (cm)",petal length (cm)\r\n'
            '"0.2", 5.1 ,3.5,1.4\r\n'
            '\r\n'
            '2.3,6.7,3e0,"5.2"\r\n')
    table = parse(text, IRIS)
    same_table(table, Table.from_numbers(np.array(IRIS_ROWS[:2])))
    same_table(table, as_mlflow_reads_it(text.lstrip("\ufeff"), IRIS))


def test_the_last_line_may_lack_its_line_end_and_integers_are_numbers():
    text = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5,3,1,0"
    same_table(parse(text, IRIS), Table.from_numbers(np.array([[5.0, 3.0, 1.0, 0.0]])))


@pytest.mark.parametrize("missing", ["", "NA", "nan", "NaN", "null", "NULL", "None", "N/A", "#N/A", "<NA>"])
def test_pandas_missing_value_strings_are_nan_in_numeric_columns(missing):
    text = to_csv(IRIS.feature_names, [[5.1, missing, 1.4, 0.2]])
    table = parse(text, IRIS)
    assert np.isnan(table.numeric[0, 1]) and table.numeric[0, 0] == 5.1
    same_table(table, as_mlflow_reads_it(text, IRIS))


def test_the_missing_value_strings_are_pandas_defaults():
    from pandas._libs.parsers import STR_NA_VALUES

    assert NA_STRINGS == STR_NA_VALUES


def test_the_index_column_of_dataframe_to_csv_is_ignored():
    frame = pd.DataFrame(IRIS_ROWS, columns=IRIS.feature_names, index=[7, 8, 9])
    text = frame.to_csv()  # writes ",sepal length (cm),..." then "7,5.1,..."
    assert text.startswith(",")
    same_table(parse(text, IRIS), Table.from_numbers(np.array(IRIS_ROWS)))


def test_the_numbers_are_the_doubles_pandas_reads():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(200, 4)) * 10.0 ** rng.integers(-30, 30, size=(200, 4))
    rows = [[repr(float(v)) for v in row] for row in values[:100]] + \
           [["%.25g" % v for v in row] for row in values[100:]]
    text = to_csv(IRIS.feature_names, rows)
    table = parse(text, IRIS, max_rows=200)
    np.testing.assert_array_equal(table.numeric, values)
    same_table(table, as_mlflow_reads_it(text, IRIS))


def test_a_column_with_one_missing_cell_still_reads_its_numbers_exactly():
    rows = [[0.1, 0.2, 0.3, 1e-7], [1.0 / 3, "", 2.5e10, -0.0]]
    text = to_csv(IRIS.feature_names, rows)
    table = parse(text, IRIS)
    np.testing.assert_array_equal(table.numeric, [[0.1, 0.2, 0.3, 1e-7], [1.0 / 3, np.nan, 2.5e10, -0.0]])
    same_table(table, as_mlflow_reads_it(text, IRIS))


# Mixed schema: numeric and text columns

MIXED_COLUMNS = ["plan", "income", "colour", "age"]  # not the schema's order
MIXED_ROWS = [["pro", 15000, "red", 40], ["unseen, with a comma", -2.5, "blue", 0.001],
              ["basic", "", "", ""]]


def test_mixed_rows_equal_dataframe_split_with_null_for_empty_cells():
    text = to_csv(MIXED_COLUMNS, MIXED_ROWS)
    table = parse(text)
    expected = Table(numeric=np.array([[40.0, 15000.0], [0.001, -2.5], [np.nan, np.nan]]),
                     categorical=np.array([["red", "pro"], ["blue", "unseen, with a comma"], [None, "basic"]],
                                          dtype=object))
    same_table(table, expected)
    as_json = [[None if value == "" else value for value in row] for row in MIXED_ROWS]
    same_table(table, as_split(MIXED_COLUMNS, as_json, MIXED))
    same_table(table, as_mlflow_reads_it(text, MIXED))


def test_text_cells_stay_text_verbatim_unless_a_missing_value_string():
    text = to_csv(MIXED_COLUMNS, [["12", 1, " red ", 2], ["NA", 3, '"quoted"', 4], ["nA", 5, "line\nbreak", 6]])
    table = parse(text)
    assert table.categorical.tolist() == [[" red ", "12"], ['"quoted"', None], ["line\nbreak", "nA"]]
    same_table(table, as_mlflow_reads_it(text, MIXED))


def test_crlf_and_bom_in_a_mixed_table():
    text = "\ufeff" + to_csv(MIXED_COLUMNS, MIXED_ROWS[:2], line_end="\r\n")
    same_table(parse(text), parse(to_csv(MIXED_COLUMNS, MIXED_ROWS[:2])))


# Refusals: status, reason and a distinctive part of the sentence

def header(schema: TableSchema = MIXED) -> str:
    return ",".join(schema.feature_names) + "\n"


@pytest.mark.parametrize(("text", "status", "reason", "fragment"), [
    (b"", 400, "empty_body", "body is empty"),
    (b"\n\n", 400, "empty_body", "no header row"),
    (b"age,colour,income,plan\n40,\xff,1,pro\n", 400, "bad_encoding", "not valid UTF-8"),
    (header() + '40,"red"x,1,pro\n', 400, "malformed_csv", "not valid CSV (line 2"),
    (header() + '40,"red,1,pro\n', 400, "malformed_csv", "not valid CSV"),
    (header(), 400, "empty_features", "header (line 1) but no rows"),
    (header() + "\n\n", 400, "empty_features", "no rows"),
    ("age,colour,plan\n1,red,pro\n", 422, "missing_column", "column 'income' is missing"),
    (header().strip() + ",extra\n1,red,2,pro,3\n", 422, "unknown_column", "unknown column 'extra'"),
    ("age,colour,income,plan,age\n1,red,2,pro,1\n", 422, "duplicate_column", "column 'age' appears twice"),
    ("Age,colour,income,plan\n1,red,2,pro\n", 422, "unknown_column", "unknown column 'Age'"),
    (header() + "1,red,2\n", 422, "wrong_length", "row 0 (line 2) has 3 values; the header names 4"),
    (header() + "1,red,2,pro\n\n1,red,2,pro,\n", 422, "wrong_length", "row 1 (line 4) has 5 values"),
    (header() + "1,red,2,pro\n1,red,abc,pro\n", 422, "not_a_number", "row 1 (line 3), column 'income': 'abc' is not a number"),
    (header() + "1_000,red,2,pro\n", 422, "not_a_number", "column 'age': '1_000' is not a number"),
    (header() + "NAN,red,2,pro\n", 422, "not_a_number", "'NAN' is not a number"),
    (header() + "0x10,red,2,pro\n", 422, "not_a_number", "'0x10' is not a number"),
    (header() + " ,red,2,pro\n", 422, "not_a_number", "' ' is not a number"),
    (header() + "\u0663,red,2,pro\n", 422, "not_a_number", "is not a number"),  # an Arabic-Indic 3
    (header() + "1,red,inf,pro\n", 422, "out_of_range", "row 0 holds a value outside the accepted range"),
    (header() + "1,red,1e101,pro\n", 422, "out_of_range", "outside the accepted range"),
    (header() + "1,red,-1e400,pro\n", 422, "out_of_range", "outside the accepted range"),
    (header() + "1,red,2,pro\n" * 6, 422, "too_many_rows", "6 rows is more than the limit of 5"),
])
def test_refusals(text, status, reason, fragment):
    error = rejected(text)
    assert (error.status, error.reason) == (status, reason), error.message
    assert fragment in error.message
    assert error.message.count(". ") == 0  # one sentence


def test_a_first_header_name_that_is_empty_is_an_index_only_in_first_place():
    error = rejected("age,,colour,income,plan\n1,2,red,3,pro\n")
    assert (error.status, error.reason) == (422, "unknown_column") and "''" in error.message


def test_the_row_limit_counts_rows_not_lines():
    text = header() + "1,red,2,pro\n\n\n" * 5
    assert len(parse(text, max_rows=5)) == 5


# What MLflow answers, checked against MLflow itself

def mlflow_get(path: str) -> httpx.Response:
    """GET path from MLflow's own scoring app (`mlflow models serve` without uvicorn)."""
    from mlflow.pyfunc import scoring_server

    model = SimpleNamespace(metadata=SimpleNamespace(get_input_schema=lambda: None))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=scoring_server.init(model))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)
    return asyncio.run(go())


def test_content_types_ping_and_version_are_mlflows():
    import mlflow
    from mlflow.pyfunc import scoring_server

    assert CSV_CONTENT_TYPES == {scoring_server.CONTENT_TYPE_CSV.encode()}
    ping = mlflow_get("/ping")
    assert ping.status_code == 200 and ping.content == PING_BODY
    assert [(b"content-type", ping.headers["content-type"].encode())] == PING_HEADERS
    version = mlflow_get("/version")
    assert version.status_code == 200 and version.content == version_body(mlflow.__version__)
    assert [(b"content-type", version.headers["content-type"].encode())] == VERSION_HEADERS
    assert version_body("3.17.2") == b"3.17.2"


def test_error_body_is_mlflows_shape_with_our_error_key():
    document = json.loads(error_body("the request body is not valid JSON"))
    assert document == {"error_code": "BAD_REQUEST", "message": "the request body is not valid JSON",
                        "error": "the request body is not valid JSON"}
    assert list(document)[:2] == ["error_code", "message"]
    assert json.loads(error_body('a "quoted" \u00e9 word', error_code="INVALID_PARAMETER_VALUE")) == {
        "error_code": "INVALID_PARAMETER_VALUE", "message": 'a "quoted" \u00e9 word',
        "error": 'a "quoted" \u00e9 word'}


@pytest.mark.parametrize(("status", "reason", "code"), [
    (400, "malformed_json", "BAD_REQUEST"), (400, "unknown_keys", "BAD_REQUEST"),
    (400, "bad_encoding", "BAD_REQUEST"), (400, "malformed_csv", "BAD_REQUEST"),
    (400, "empty_features", "BAD_REQUEST"), (422, "wrong_length", "BAD_REQUEST"),
    (422, "not_a_number", "BAD_REQUEST"), (422, "out_of_range", "BAD_REQUEST"),
    (422, "too_many_rows", "BAD_REQUEST"),
    (422, "missing_column", "INVALID_PARAMETER_VALUE"), (422, "unknown_column", "INVALID_PARAMETER_VALUE"),
    (422, "duplicate_column", "INVALID_PARAMETER_VALUE"), (422, "not_text", "INVALID_PARAMETER_VALUE"),
    (401, "auth", "UNAUTHENTICATED"), (405, "method", "BAD_REQUEST"), (408, "timeout", "DEADLINE_EXCEEDED"),
    (413, "too_large", "BAD_REQUEST"), (415, "content_type", "BAD_REQUEST"),
    (503, "not_ready", "TEMPORARILY_UNAVAILABLE"), (500, "bug", "INTERNAL_ERROR"), (502, "x", "INTERNAL_ERROR"),
])
def test_error_codes(status, reason, code):
    from mlflow.exceptions import ERROR_CODE_TO_HTTP_STATUS

    assert error_code_for(status, reason) == code
    # A real MLflow code, whose status in MLflow is the one we answer, 400 for our 422s,
    # or (no MLflow code for it) BAD_REQUEST for a 4xx and INTERNAL_ERROR for a 5xx.
    assert code in ERROR_CODE_TO_HTTP_STATUS
    mlflow_status = ERROR_CODE_TO_HTTP_STATUS[code]
    assert mlflow_status == (400 if status == 422 else status) or (
        code == "BAD_REQUEST" and 400 <= status < 500) or code in ("INTERNAL_ERROR", "DEADLINE_EXCEEDED")


@pytest.mark.parametrize(("body", "code"), [
    (b"{", "BAD_REQUEST"),
    (b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}, "inputs": []}', "BAD_REQUEST"),
    (b'{"unknown": []}', "BAD_REQUEST"),
    (b"[1, 2]", "BAD_REQUEST"),
])
def test_mlflow_refuses_malformed_bodies_as_bad_request_400(body, code):
    """MLflow's own invocations() on these bodies: the code error_code_for gives for ours."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    model = SimpleNamespace(metadata=SimpleNamespace(get_input_schema=lambda: None))
    with pytest.raises(MlflowException) as caught:
        scoring_server.invocations(body, "application/json", model, None)
    assert caught.value.get_http_status_code() == 400
    assert json.loads(caught.value.serialize_as_json())["error_code"] == code
    with pytest.raises(RequestError) as ours:
        parse_mlflow_request(body, schema=IRIS, max_rows=10)
    assert ours.value.status == 400 and error_code_for(ours.value.status, ours.value.reason) == code


def test_mlflow_answers_415_in_plain_text_for_other_content_types():
    from mlflow.pyfunc import scoring_server

    model = SimpleNamespace(metadata=SimpleNamespace(get_input_schema=lambda: None))
    for content_type in ("text/plain", "Text/CSV", "text/csv; charset=latin-1", "text/csv; header=present"):
        answer = scoring_server.invocations(b"a\n1\n", content_type, model, None)
        assert (answer.status, answer.mimetype) == (415, "text/plain"), content_type
