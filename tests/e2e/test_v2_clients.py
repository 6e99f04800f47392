"""The Open Inference Protocol (V2) of a real `bentoml serve`, through an unmodified Triton client."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.e2e

MODEL = "ClassificationModel"
CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def health(served) -> dict:
    return httpx.get(f"{served.url}/health").json()["model"]


@pytest.fixture(scope="module")
def client(served):
    client = InferenceServerClient(url=served.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    split = split_dataset(load_dataset("iris"), test_size=0.2, random_state=42)
    return split.X_test.to_numpy(dtype=np.float64)


def predict(served, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities (in class order) that /predict gives for these rows."""
    response = httpx.post(f"{served.url}/predict", json={"features": rows.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return ([p["label"] for p in predictions],
            np.array([[p["probabilities"][name] for name in CLASSES] for p in predictions]))


def infer_input(rows: np.ndarray, datatype: str, *, binary: bool) -> InferInput:
    tensor = InferInput("input", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(np.float64 if datatype == "FP64" else np.float32), binary_data=binary)
    return tensor


def other_version(health: dict) -> str:
    """A registry version that is not the served one (the next, which was never imported)."""
    return str(int(health["version"]) + 1)


def test_server_and_model_are_live_and_ready(client, health):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version=health["version"])
    assert not client.is_model_ready("OtherModel")
    assert not client.is_model_ready(MODEL, model_version=other_version(health))


def test_server_metadata(client):
    metadata = client.get_server_metadata()
    assert metadata["name"] == "classification_service"
    assert isinstance(metadata["version"], str) and metadata["extensions"] == []


def test_model_metadata(client, health):
    for version in ("", health["version"]):
        metadata = client.get_model_metadata(MODEL, model_version=version)
        assert metadata["name"] == MODEL
        assert metadata["versions"] == [health["version"]]
        assert metadata["platform"] == f"sklearn-{health['served_form']}"
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
        assert [output["name"] for output in metadata["outputs"]] == ["label", "probabilities", "class_index"]
        assert metadata["outputs"][1] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp64_infer_answers_exactly_as_predict(served, client, health, held_out, binary):
    labels, probabilities = predict(served, held_out)
    result = client.infer(MODEL, [infer_input(held_out, "FP64", binary=binary)])
    assert result.as_numpy("label").tolist() == labels
    got = result.as_numpy("probabilities")
    assert got.shape == (len(held_out), 3) and got.dtype == np.float64
    np.testing.assert_array_equal(got, probabilities)  # the very same doubles
    assert result.as_numpy("class_index").tolist() == [CLASSES.index(label) for label in labels]
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == health["version"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp32_infer_answers_as_predict_on_the_float32_rows(served, client, held_out, binary):
    rounded = held_out.astype(np.float32).astype(np.float64)
    assert not np.array_equal(rounded, held_out)  # the rounding is real
    labels, probabilities = predict(served, rounded)
    result = client.infer(MODEL, [infer_input(held_out, "FP32", binary=binary)])
    assert result.as_numpy("label").tolist() == labels
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)


def test_requested_outputs_and_request_id(client, held_out):
    result = client.infer(MODEL, [infer_input(held_out[:3], "FP64", binary=False)], request_id="req-42",
                          outputs=[InferRequestedOutput("class_index", binary_data=False)])
    response = result.get_response()
    assert response["id"] == "req-42"
    assert [output["name"] for output in response["outputs"]] == ["class_index"]
    assert result.as_numpy("label") is None


def test_the_versioned_path_works_and_another_version_or_model_is_refused(client, health, held_out):
    rows = [infer_input(held_out[:2], "FP64", binary=True)]
    versioned = client.infer(MODEL, rows, model_version=health["version"])
    np.testing.assert_array_equal(versioned.as_numpy("probabilities"),
                                  client.infer(MODEL, rows).as_numpy("probabilities"))
    for name, version in [(MODEL, other_version(health)), ("OtherModel", ""), ("OtherModel", health["version"])]:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(name, rows, model_version=version)
        assert caught.value.status() == "404" and caught.value.message()
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(MODEL, model_version=other_version(health))


def tensor(data, shape, datatype="FP64", name="input") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


ROW = [5.1, 3.5, 1.4, 0.2]
BAD_TENSORS = [
    ("not JSON", b"{", "not valid JSON"),
    ("not an object", [ROW], "JSON object"),
    ("no inputs", {"id": "1"}, "'inputs' key is missing"),
    ("wrong input names", {"inputs": [tensor([5.1], [1], name="a"), tensor([3.5], [1], name="b")]}, "unknown input"),
    ("wrong datatype", {"inputs": [tensor(ROW, [1, 4], "BYTES")]}, "datatype BYTES"),
    ("wrong shape", {"inputs": [tensor(ROW[:3], [1, 3])]}, "shape [1, 3]"),
    ("data length", {"inputs": [tensor(ROW + ROW[:3], [2, 4])]}, "has 7 values"),
    ("string value", {"inputs": [tensor([5.1, "x", 1.4, 0.2], [1, 4])]}, "not a number"),
    ("boolean value", {"inputs": [tensor([5.1, True, 1.4, 0.2], [1, 4])]}, "not a number"),
    ("out of range", {"inputs": [tensor([5.1, 1e300, 1.4, 0.2], [1, 4])]}, "outside the accepted range"),
    ("too many rows", {"inputs": [tensor(ROW * 10_001, [10_001, 4])]}, "more than the limit"),
    ("unknown output", {"inputs": [tensor(ROW, [1, 4])], "outputs": [{"name": "score"}]}, "unknown output"),
]


@pytest.mark.parametrize("name, content, words", BAD_TENSORS, ids=[b[0] for b in BAD_TENSORS])
def test_bad_tensors_get_400_with_an_error_sentence(served, name, content, words):
    kwargs = {"content": content} if isinstance(content, bytes) else {"json": content}
    response = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", timeout=30,
                          headers={"content-type": "application/json"}, **kwargs)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]


def test_unknown_v2_paths_and_wrong_methods_answer_json(served):
    for method, path, status in [("GET", "/v2/models/ClassificationModel/config", 404),
                                 ("GET", "/v2/repository/index", 404),
                                 ("GET", f"/v2/models/{MODEL}/infer", 405),
                                 ("POST", "/v2/health/live", 405)]:
        response = httpx.request(method, f"{served.url}{path}")
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["error"]
