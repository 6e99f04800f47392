"""The Open Inference Protocol (V2) functions: routes, metadata, tensors in, tensors out."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from serving.errors import RequestError
from serving.protocols.v2 import check_model, format_infer, model_metadata, server_metadata
from serving.protocols.v2_tensors import InferRequest, parse_infer
from serving.routes import RouteTable
from serving.schema import CATEGORY, NUMBER, Feature, Table, TableSchema

pytestmark = pytest.mark.unit

IRIS = TableSchema(features=tuple(Feature(name, NUMBER) for name in
                                  ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")),
                   class_names=("setosa", "versicolor", "virginica"))
MIXED = TableSchema(features=(Feature("tenure", NUMBER), Feature("contract", CATEGORY, ("monthly", "yearly")),
                              Feature("calls", NUMBER)),
                    class_names=("no", "yes"))
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def body(*inputs: dict, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def tensor(data, shape=None, datatype="FP64", name="input") -> dict:
    return {"name": name, "shape": shape if shape is not None else list(np.shape(data)),
            "datatype": datatype, "data": data}


def parse(content: bytes, schema: TableSchema = IRIS, max_rows: int = 3, **kwargs) -> InferRequest:
    return parse_infer(content, schema=schema, max_rows=max_rows, **kwargs)


# Routes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/v2", ("server", None, None)),
    ("GET", "/v2/", ("server", None, None)),
    ("HEAD", "/v2", ("server", None, None)),
    ("GET", "/v2/health/live", ("live", None, None)),
    ("GET", "/v2/health/ready", ("ready", None, None)),
    ("GET", "/v2/models/M", ("model", "M", None)),
    ("GET", "/v2/models/M/versions/3", ("model", "M", "3")),
    ("GET", "/v2/models/M/ready", ("model_ready", "M", None)),
    ("GET", "/v2/models/M/versions/3/ready", ("model_ready", "M", "3")),
    ("POST", "/v2/models/M/infer", ("infer", "M", None)),
    ("POST", "/v2/models/M/versions/3/infer", ("infer", "M", "3")),
    ("POST", "/v2/models/M/versions/3/infer/", ("infer", "M", "3")),
    ("POST", "/v2/health/live", ("method", None, None)),
    ("DELETE", "/v2", ("method", None, None)),
    ("GET", "/v2/models/M/infer", ("method", "M", None)),
    ("PUT", "/v2/models/M/versions/3/infer", ("method", "M", "3")),
    ("POST", "/v2/models/M/ready", ("method", "M", None)),
    ("GET", "/v2/health", ("not_found", None, None)),
    ("GET", "/v2/health/live/x", ("not_found", None, None)),
    ("GET", "/v2/models", ("not_found", None, None)),
    ("GET", "/v2/models/", ("not_found", None, None)),
    ("GET", "/v2/models//ready", ("not_found", None, None)),
    ("GET", "/v2/models/M/versions", ("not_found", None, None)),
    ("GET", "/v2/models/M/versions//infer", ("not_found", None, None)),
    ("GET", "/v2/models/M/config", ("not_found", None, None)),
    ("POST", "/v2/models/M/versions/3/infer/x", ("not_found", None, None)),
    ("POST", "/v2/repository/index", ("not_found", None, None)),
    ("GET", "/v2x", ("not_found", None, None)),
    ("GET", "/v1/models/M", ("not_found", None, None)),
])
def test_route(method, path, expected):
    assert route(method, path) == expected


def route(method: str, path: str) -> tuple[str, str | None, str | None]:
    """The route table's answer for a V2 path, in the terms of the cases above: the adapter method
    that answers it, "method" for a known path and a wrong method, "not_found" for any other path."""
    found, params = RouteTable().match(path)
    if found is None or found.handler == "not_found":
        return "not_found", None, None
    kind = found.handler if method in found.methods else "method"
    return kind, params.get("name"), params.get("version")


# Metadata ----------------------------------------------------------------------------------

def test_server_metadata():
    assert server_metadata(version="1.2.3") == {"name": "classification_service", "version": "1.2.3",
                                                "extensions": []}


def test_model_metadata_of_an_all_numeric_model():
    assert model_metadata(schema=IRIS, name="ClassificationModel", version="5", platform="sklearn-linear") == {
        "name": "ClassificationModel", "versions": ["5"], "platform": "sklearn-linear",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
                    {"name": "class_index", "datatype": "INT64", "shape": [-1]}]}


def test_model_metadata_of_a_model_with_text_columns_lists_each_column():
    metadata = model_metadata(schema=MIXED, name="M", version="2", platform="sklearn-onnx")
    assert metadata["inputs"] == [{"name": "tenure", "datatype": "FP64", "shape": [-1]},
                                  {"name": "contract", "datatype": "BYTES", "shape": [-1]},
                                  {"name": "calls", "datatype": "FP64", "shape": [-1]}]
    assert metadata["outputs"][1] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}
    json.dumps(metadata)  # plain JSON


def test_check_model():
    check_model("M", None, served_name="M", served_version="5")
    check_model("M", "5", served_name="M", served_version="5")
    for name, version, words in [("Other", None, "'Other' is not served here"),
                                 ("M", "4", "no version '4'"), ("Other", "5", "not served")]:
        with pytest.raises(RequestError) as caught:
            check_model(name, version, served_name="M", served_version="5")
        assert caught.value.status == 404 and caught.value.reason == "unknown_model"
        assert words in caught.value.message


# Requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data, shape", [
    (ROWS, [2, 4]),  # nested
    ([v for row in ROWS for v in row], [2, 4]),  # flat, row-major
])
def test_fp64_flat_and_nested(data, shape):
    request = parse(body(tensor(data, shape)))
    np.testing.assert_array_equal(request.table.numeric, ROWS)
    assert request.table.numeric.dtype == np.float64
    assert request.table.categorical.shape == (2, 0)
    assert request.id is None and request.outputs is None


def test_fp32_values_are_rounded_to_float32():
    request = parse(body(tensor(ROWS, datatype="FP32")))
    np.testing.assert_array_equal(request.table.numeric, np.array(ROWS, dtype=np.float32).astype(np.float64))
    assert request.table.numeric.dtype == np.float64
    assert request.table.numeric[0, 0] != 5.1  # 5.1 is not a float32


@pytest.mark.parametrize("datatype", ["INT64", "INT32"])
def test_integer_tensors(datatype):
    request = parse(body(tensor([[5, 3, 1, 0], [-7, 3, 5, 2]], datatype=datatype)))
    np.testing.assert_array_equal(request.table.numeric, [[5, 3, 1, 0], [-7, 3, 5, 2]])
    assert request.table.numeric.dtype == np.float64


def test_any_single_input_name_and_the_id_are_accepted():
    request = parse(body(tensor(ROWS, name="features"), id="abc-1"))
    assert request.id == "abc-1"
    np.testing.assert_array_equal(request.table.numeric, ROWS)


def test_iris_rows_give_the_same_table_as_predict():
    from training.data import load_dataset, split_dataset

    X = split_dataset(load_dataset("iris"), test_size=0.2, random_state=42).X_test.to_numpy()
    table = parse(body(tensor(X.ravel().tolist(), [len(X), 4])), max_rows=1000).table
    expected = Table.from_numbers(X)
    np.testing.assert_array_equal(table.numeric, expected.numeric)
    assert table.numeric.dtype == expected.numeric.dtype
    assert table.categorical.shape == expected.categorical.shape
    assert table.categorical.dtype == expected.categorical.dtype


def test_per_column_inputs_of_a_mixed_model():
    content = body(tensor([3, 12.5], [2], "INT64", name="calls"),  # any order, any numeric type
                   tensor([[1.5], [24.0]], [2, 1], "FP32", name="tenure"),
                   tensor(["monthly", "never seen"], [2], "BYTES", name="contract"))
    with pytest.raises(RequestError, match="not an integer"):  # 12.5 in an INT64 tensor
        parse(content, schema=MIXED)
    content = body(tensor([3, 12], [2], "INT64", name="calls"),
                   tensor([[1.5], [24.0]], [2, 1], "FP32", name="tenure"),
                   tensor(["monthly", "never seen"], [2], "BYTES", name="contract"))
    table = parse(content, schema=MIXED).table
    np.testing.assert_array_equal(table.numeric, [[1.5, 3], [24, 12]])  # schema.numeric order
    assert table.categorical.tolist() == [["monthly"], ["never seen"]]
    assert table.categorical.dtype == object


def test_an_all_numeric_model_takes_per_column_inputs_too():
    inputs = [tensor([row[j] for row in ROWS], [2], name=name) for j, name in enumerate(IRIS.feature_names)]
    np.testing.assert_array_equal(parse(body(*reversed(inputs))).table.numeric, ROWS)


def test_outputs_and_parameters_are_read():
    request = parse(body(tensor(ROWS), outputs=[{"name": "probabilities", "parameters": {"binary_data": True}},
                                                {"name": "label"}],
                         parameters={"binary_data_output": False}))
    assert request.outputs == ["probabilities", "label"]
    assert parse(body(tensor(ROWS), outputs=[])).outputs is None


def binary_body(inputs: list[tuple[str, np.ndarray, str]], **json_extra) -> tuple[bytes, int]:
    """A body with binary tensor data, as tritonclient sends by default, and its JSON length."""
    header, chunks = {"inputs": [], **json_extra}, []
    for name, array, datatype in inputs:
        if datatype == "BYTES":
            raw = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in array.ravel())
        else:
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header["inputs"].append({"name": name, "shape": list(array.shape), "datatype": datatype,
                                 "parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    head = json.dumps(header).encode()
    return head + b"".join(chunks), len(head)


@pytest.mark.parametrize("dtype, datatype", [(np.float64, "FP64"), (np.float32, "FP32"),
                                             (np.int64, "INT64"), (np.int32, "INT32")])
def test_binary_tensor_data(dtype, datatype):
    X = np.array(ROWS if datatype.startswith("FP") else [[5, 3, 1, 0], [6, 3, 5, 2]], dtype=dtype)
    content, length = binary_body([("input", X, datatype)])
    table = parse(content, header_length=length).table
    np.testing.assert_array_equal(table.numeric, X.astype(np.float64))


def test_nan_in_binary_float_data_is_a_missing_value():
    X = np.array([[np.nan, 3.5, 1.4, 0.2]])
    content, length = binary_body([("input", X, "FP64")])
    numeric = parse(content, header_length=length).table.numeric
    assert np.isnan(numeric[0, 0]) and numeric[0, 1] == 3.5


def test_binary_bytes_and_json_inputs_mixed():
    content, length = binary_body([("contract", np.array(["yearly", "é"], dtype=object), "BYTES"),
                                   ("calls", np.array([1, 2], dtype=np.int32), "INT32")])
    document = json.loads(content[:length])
    document["inputs"].append(tensor([0.5, 7], [2], name="tenure"))
    head = json.dumps(document).encode()
    table = parse(head + content[length:], schema=MIXED, header_length=len(head)).table
    np.testing.assert_array_equal(table.numeric, [[0.5, 1], [7, 2]])
    assert table.categorical.tolist() == [["yearly"], ["é"]]


def test_the_body_tritonclient_writes_is_read():
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    X = np.array(ROWS)
    binary, text = InferInput("input", list(X.shape), "FP64"), InferInput("input", list(X.shape), "FP32")
    binary.set_data_from_numpy(X)
    text.set_data_from_numpy(X.astype(np.float32), binary_data=False)
    for infer_input, expected in [(binary, X), (text, X.astype(np.float32))]:
        content, length = InferenceServerClient.generate_request_body(
            [infer_input], outputs=[InferRequestedOutput("label")], request_id="7")
        request = parse(content, header_length=length)
        np.testing.assert_array_equal(request.table.numeric, expected.astype(np.float64))
        assert request.id == "7" and request.outputs == ["label"]


def rejected(content: bytes, schema: TableSchema = IRIS, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(content, schema=schema, **kwargs)
    return caught.value


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"{", "not valid JSON"),
    (b"[1]", "JSON object"),
    (b"\xff", "UTF-8"),
    (b'{"inputs": [], "inputs": []}', "duplicate keys"),
    (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [NaN, 1, 2, 3]}]}',
     "NaN is not a number: tensor data must be finite numbers"),
    (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, -Infinity, 2, 3]}]}',
     "-Infinity is not a number: tensor data must be finite numbers"),
    (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, ' + b"9" * 5000
     + b"]}]}", "the body holds a number of 5000 digits; numbers may have at most 4300 digits"),
    (b"{}", "'inputs' key is missing"),
    (body(tensor(ROWS), extra=1), "unknown key(s) 'extra'"),
    (json.dumps({"inputs": []}).encode(), "non-empty list"),
    (json.dumps({"inputs": {"input": ROWS}}).encode(), "non-empty list"),
    (body(tensor(ROWS), id=7), "'id' must be a string"),
    (body(tensor(ROWS), parameters=[]), "'parameters' must be an object"),
    (body([1, 2]), "input 0 is not an object"),
    (body({"shape": [2, 4], "datatype": "FP64", "data": ROWS}), "input 0 has no 'name'"),
    (body({**tensor(ROWS), "extra": 1}), "unknown key(s) 'extra'"),
    (body({"name": "input", "shape": [2, 4], "data": ROWS}), "no 'datatype'"),
    (body({"name": "input", "datatype": "FP64", "data": ROWS}), "'shape' must be a list"),
    (body(tensor(ROWS, [2, -4])), "'shape' must be a list of non-negative"),
    (body(tensor(ROWS, [2, True])), "'shape' must be a list of non-negative"),
    (body({"name": "input", "shape": [2, 4], "datatype": "FP64"}), "has no 'data'"),
    (body(tensor(ROWS), tensor(ROWS)), "given more than once"),
    (body(tensor(ROWS, datatype="BYTES")), "datatype BYTES; this model takes FP64"),
    (body(tensor(ROWS, datatype="BOOL")), "datatype BOOL"),
    (body(tensor(ROWS, datatype="fp64")), "datatype fp64"),
    (body(tensor([[1, 2, 3]], [1, 3])), "shape [1, 3]; this model takes shape [-1, 4]"),
    (body(tensor([1, 2, 3, 4], [4])), "shape [4]; this model takes shape [-1, 4]"),
    (body(tensor([[[1, 2, 3, 4]]], [1, 1, 4])), "shape [1, 1, 4]"),
    (body(tensor([], [0, 4])), "no rows to score"),
    (body(tensor(ROWS * 2, [4, 4])), "4 rows is more than the limit of 3"),
    (body(tensor(ROWS, [3, 4])), "nested 'data' is not shaped [3, 4]"),
    (body(tensor([[1, 2, 3, 4], [1, 2, 3]], [2, 4])), "nested 'data' is not shaped"),
    (body(tensor([[1, 2, 3, 4], 5, 6, 7, 8], [2, 4])), "nested 'data' is not shaped"),
    (body(tensor([1, 2, 3, 4, 5, 6, 7], [2, 4])), "has 7 values; shape [2, 4] needs 8"),
    (body(tensor(list(range(9)), [2, 4])), "has 9 values"),
    (body(tensor({"a": 1}, [1, 4])), "'data' must be a list"),
    (body(tensor([1, 2, "3", 4], [1, 4])), 'holds "3", which is not a number'),
    (body(tensor([1, 2, True, 4], [1, 4])), "holds true, which is not a number"),
    (body(tensor([1, 2, None, 4], [1, 4])), "holds null, which is not a number"),
    (body(tensor([1, 2, [3], 4], [1, 4])), "holds [3], which is not a number"),
    (body(tensor([1, 2, 3.5, 4], [1, 4], "INT64")), "holds 3.5, which is not an integer (INT64)"),
    (body(tensor([1, 2, 3.0, 4], [1, 4], "INT32")), "not an integer (INT32)"),
    (body(tensor([1, 2, 2 ** 31, 4], [1, 4], "INT32")), "does not fit INT32"),
    (body(tensor([1, 2, 2 ** 63, 4], [1, 4], "INT64")), "does not fit INT64"),
    (body(tensor([1, 2, 10 ** 400, 4], [1, 4])), "does not fit FP64"),
    (b'{"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 1e400, 7, 8]}]}',
     "input 'input', row 1 holds a value outside the accepted range"),
    (body(tensor([1, 2, -2e100, 4], [1, 4])), "outside the accepted range -1e+100 to 1e+100"),
    (body(tensor([1, 2, 1e39, 4], [1, 4], "FP32")), "outside the accepted range"),
    (body(tensor(ROWS), outputs={"name": "label"}), "'outputs' must be a list"),
    (body(tensor(ROWS), outputs=["label"]), "output 0 is not an object"),
    (body(tensor(ROWS), outputs=[{"name": "score"}]), "unknown output 'score'; this model's outputs are label"),
    (body(tensor(ROWS), outputs=[{"name": "label"}, {"name": "label"}]), "asked for more than once"),
    (body(tensor(ROWS), outputs=[{"name": "label", "x": 1}]), "unknown key(s) 'x'"),
    (body(tensor(ROWS), outputs=[{"name": "label", "parameters": 1}]), "'parameters' must be an object"),
    (body({**tensor(ROWS), "parameters": {"binary_data_size": 64}}), "both 'data' and a binary_data_size"),
    (body(tensor([row[0] for row in ROWS], [2], name="sepal length (cm)"),
          tensor([row[1] for row in ROWS], [2], name="petal area")), "unknown input 'petal area'"),
    (body(*[tensor([row[j] for row in ROWS], [2], name=name) for j, name in enumerate(IRIS.feature_names[:3])]),
     "input 'petal width (cm)' is missing"),
])
def test_bad_requests_are_400(content, words):
    error = rejected(content)
    assert error.status == 400
    assert words in error.message, error.message
    assert "\n" not in error.message


def mixed_inputs(**replace) -> bytes:
    inputs = {"tenure": tensor([1.5, 24.0], [2], name="tenure"),
              "contract": tensor(["monthly", "yearly"], [2], "BYTES", name="contract"),
              "calls": tensor([3, 0], [2], "INT64", name="calls")}
    inputs.update(replace)
    return body(*[value for value in inputs.values() if value is not None])


@pytest.mark.parametrize("content, words", [
    (body(tensor([[1, 2, 3]], [1, 3])), "unknown input 'input'; this model takes one input per column"),
    (mixed_inputs(calls=None), "input 'calls' is missing; this model takes one input per column: 'tenure'"),
    (mixed_inputs(extra=tensor([1, 2], [2], name="extra")), "unknown input 'extra'"),
    (mixed_inputs(contract=tensor([1, 2], [2], name="contract")), "datatype FP64; this text column takes BYTES"),
    (mixed_inputs(tenure=tensor(["1", "2"], [2], "BYTES", name="tenure")), "this numeric column takes FP64"),
    (mixed_inputs(tenure=tensor([[1, 2]], [1, 2], name="tenure")), "a column takes shape [-1] or [-1, 1]"),
    (mixed_inputs(tenure=tensor([1.5], [1], name="tenure")), "different numbers of rows ('tenure': 1, 'contract': 2"),
    (mixed_inputs(contract=tensor(["a", None], [2], "BYTES", name="contract")), "holds null: a BYTES tensor cannot"),
    (mixed_inputs(contract=tensor(["a", 3], [2], "BYTES", name="contract")), "holds 3, which is not text"),
    (mixed_inputs(tenure=tensor([1, "2"], [2], name="tenure")), "input 'tenure' holds \"2\", which is not a number"),
    (mixed_inputs(calls=tensor([1, 2, 3], [2], name="calls")), "has 3 values; shape [2] needs 2"),
])
def test_bad_column_inputs_are_400(content, words):
    error = rejected(content, schema=MIXED)
    assert error.status == 400
    assert words in error.message, error.message


def test_bad_binary_data_is_400():
    X = np.array(ROWS)
    content, length = binary_body([("input", X, "FP64")])
    cases = [
        (content, None, "no Inference-Header-Content-Length header"),
        (content, len(content) + 1, "does not fit a body of"),
        (content, 0, "does not fit a body of"),
        (content + b"\0", length, "add up to 64 bytes, but 65 bytes"),
        (content[:-8], length, "add up to 64 bytes, but 56 bytes"),
        (body(tensor(ROWS)) + b"xx", len(body(tensor(ROWS))), "add up to 0 bytes, but 2 bytes"),
        (content[:length - 1], length - 1, "not valid JSON"),
    ]
    wrong_size, wrong_length = binary_body([("input", X.astype(np.float32), "FP64")])
    cases.append((wrong_size, wrong_length, "has 32 bytes of binary data; shape [2, 4] of FP64 needs 64"))
    infinite, infinite_length = binary_body([("input", np.array([[1, np.inf, 2, 3]]), "FP64")])
    cases.append((infinite, infinite_length, "row 0 holds a value outside the accepted range"))
    for data, header_length, words in cases:
        error = rejected(data, header_length=header_length)
        assert error.status == 400
        assert words in error.message, (words, error.message)


def test_bad_binary_bytes_are_400():
    def with_contract(raw: bytes, shape: list[int]) -> tuple[bytes, int]:
        head = body(tensor([1.0], [1], name="tenure"), tensor([1], [1], "INT64", name="calls"),
                    {"name": "contract", "shape": shape, "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(raw)}})
        return head + raw, len(head)

    for raw, shape, words in [
        (b"\x02\0\0\0\xff\xfe", [1], "element 0 is not valid UTF-8"),
        (b"\x05\0\0\0ab", [1], "not 1 length-prefixed BYTES elements"),
        (b"\x01\0\0\0a\x01\0\0\0b", [1], "not 1 length-prefixed"),
        (b"\x01\0", [1], "not 1 length-prefixed"),
    ]:
        content, length = with_contract(raw, shape)
        error = rejected(content, schema=MIXED, header_length=length)
        assert error.status == 400 and words in error.message, (words, error.message)


# Responses ---------------------------------------------------------------------------------

PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.1, 1 - 0.1 - 1 / 7, 1 / 7]])


def answer(outputs=None, request_id=None) -> dict:
    request = InferRequest(table=Table.from_numbers(np.zeros((2, 4))), id=request_id, outputs=outputs)
    return orjson.loads(format_infer(PROBABILITIES, PROBABILITIES.argmax(axis=1), schema=IRIS, name="ClassificationModel", version="5",
                                     request=request))


def test_format_infer_answers_every_output():
    assert answer() == {
        "model_name": "ClassificationModel", "model_version": "5",
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["setosa", "versicolor"]},
            {"name": "probabilities", "datatype": "FP64", "shape": [2, 3],
             "data": PROBABILITIES.ravel().tolist()},
            {"name": "class_index", "datatype": "INT64", "shape": [2], "data": [0, 1]}]}


def test_probabilities_come_back_as_the_same_doubles():
    data = answer(["probabilities"])["outputs"][0]["data"]
    assert np.array(data).reshape(2, 3).tobytes() == PROBABILITIES.tobytes()


def test_format_infer_answers_the_outputs_asked_for_in_their_order_and_echoes_the_id():
    got = answer(["class_index", "label"], request_id="req-9")
    assert got["id"] == "req-9"
    assert [output["name"] for output in got["outputs"]] == ["class_index", "label"]
    assert "id" not in answer()


def test_tritonclient_reads_the_answer():
    from tritonclient.http import InferenceServerClient

    request = InferRequest(table=Table.from_numbers(np.zeros((2, 4))), id=None, outputs=None)
    result = InferenceServerClient.parse_response_body(
        format_infer(PROBABILITIES, PROBABILITIES.argmax(axis=1), schema=IRIS, name="M", version="5", request=request))
    assert result.as_numpy("label").tolist() == ["setosa", "versicolor"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), PROBABILITIES)
    assert result.as_numpy("class_index").dtype == np.int64
