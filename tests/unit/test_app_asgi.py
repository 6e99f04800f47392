"""The endpoints at the ASGI level, in-process (no server): readiness and the error paths."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from serving.core import Limits
from serving.http import ServingApp
from serving.forms.encoder import Encoder
from serving.forms.linear import LinearPredictor
from serving.model import load_model
from serving.schema import CATEGORY, NUMBER, Feature, TableSchema
from tests.unit.conftest import linear_predictor, numeric_schema, save_model_folder

pytestmark = pytest.mark.unit


def _call(app: ServingApp, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


@pytest.fixture
def loaded(tmp_path):
    predictor = linear_predictor([[1.0, -1.0]])
    metadata = save_model_folder(tmp_path, predictor, schema=numeric_schema(["x", "y"], ["no", "yes"]),
                                 version="7")
    return load_model(tmp_path, metadata, tag="m:v7")


def test_before_binding_health_is_503_and_predict_refuses():
    app = ServingApp()
    health = _call(app, "GET", "/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    predict = _call(app, "POST", "/predict", json={"features": [[1.0, 2.0]]})
    assert predict.status_code == 503 and predict.json()["error"]
    # MLflow's scoring server answers /ping 404 while it has no model; ScoringServerClient waits.
    assert _call(app, "GET", "/ping").status_code == 404


def test_bound_app_predicts_a_binary_model(loaded):
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5), api_key=None)
    response = _call(app, "POST", "/predict", json={"features": [[3.0, 1.0], [0.0, 2.0]]})
    assert response.status_code == 200
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == ["yes", "no"]  # score x - y: positive -> class 1
    assert response.json()["model"] == {"name": "M", "version": "7"}


def test_an_unexpected_error_is_a_json_500_and_the_app_keeps_serving(loaded):
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5), api_key=None)

    def broken(*rows):
        raise RuntimeError("boom")

    # A stand-in for a bug of ours: the (frozen) predictor gets methods that raise, for tables
    # and for the one-row lane.
    object.__setattr__(loaded.predictor, "predict_proba", broken)
    object.__setattr__(loaded.predictor, "predict_row", broken)
    for rows in ([[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]):
        response = _call(app, "POST", "/predict", json={"features": rows})
        assert response.status_code == 500
        assert "internal error" in response.json()["error"]
    assert _call(app, "GET", "/health").status_code == 200


def test_a_body_that_never_comes_is_a_408_at_the_timeout_and_the_app_keeps_serving(loaded):
    import time

    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=0.2), api_key=None)
    scope = {"type": "http", "method": "POST", "path": "/predict",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"30")]}
    sent = []

    async def never() -> dict:
        await asyncio.Event().wait()

    async def send(message: dict) -> None:
        sent.append(message)

    async def go():
        started = time.monotonic()
        await asyncio.gather(app(scope, never, send), app(scope, never, send))
        return time.monotonic() - started

    seconds = asyncio.run(go())
    assert 0.2 <= seconds < 1.0
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [408, 408]
    assert b"did not arrive within 0.2 s" in sent[1]["body"]
    assert _call(app, "POST", "/predict", json={"features": [[3.0, 1.0]]}).status_code == 200


def test_records_give_the_same_answer_as_rows(loaded):
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5), api_key=None)
    rows = _call(app, "POST", "/predict", json={"features": [[3.0, 1.0], [0.0, 2.0]]})
    records = _call(app, "POST", "/predict", json={"records": [{"y": 1.0, "x": 3.0}, {"x": 0.0, "y": 2.0}]})
    assert records.status_code == 200 and records.json() == rows.json()


@pytest.fixture
def mixed(tmp_path):
    """A binary model of a number and a colour: score = x + 2 [red] - 2 [blue]."""
    encoder = Encoder(fill=np.zeros(1), mean=np.zeros(1), scale=np.ones(1),
                      categories=[["blue", "red"]], missing="missing_value")
    predictor = LinearPredictor(encoder=encoder, coef=np.array([[1.0, -2.0, 2.0]]), intercept=np.zeros(1))
    schema = TableSchema(features=(Feature("x", NUMBER), Feature("colour", CATEGORY, ("blue", "red"))),
                         class_names=("no", "yes"))
    metadata = save_model_folder(tmp_path, predictor, schema=schema, version="3")
    app = ServingApp()
    app.bind(load_model(tmp_path, metadata, tag="m:v3"),
             limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5), api_key=None)
    return app


def test_a_model_with_text_columns_answers_records(mixed):
    records = [{"x": 0.0, "colour": "red"}, {"x": 0.5, "colour": "blue"},
               {"x": 1.0, "colour": "green"}, {"x": -1.0, "colour": None}, {"x": None, "colour": "red"}]
    response = _call(mixed, "POST", "/predict", json={"records": records})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == ["yes", "no", "yes", "no", "yes"]
    assert response.json()["predictions"][2]["probabilities"]["yes"] == pytest.approx(1 / (1 + np.exp(-1.0)))
    invocations = _call(mixed, "POST", "/invocations", json={"dataframe_records": records})
    assert invocations.status_code == 200 and invocations.json() == {"predictions": [1, 0, 1, 0, 1]}


def test_a_model_with_text_columns_refuses_rows_and_wrong_types(mixed):
    rows = _call(mixed, "POST", "/predict", json={"features": [[1.0, 2.0]]})
    assert rows.status_code == 422 and "records" in rows.json()["error"]
    wrong = _call(mixed, "POST", "/predict", json={"records": [{"x": 1.0, "colour": 3}]})
    assert wrong.status_code == 422 and "row 0, column 'colour'" in wrong.json()["error"]
    mlflow = _call(mixed, "POST", "/invocations", json={"inputs": {"x": ["a"], "colour": ["red"]}})
    assert mlflow.status_code == 400 and mlflow.json()["error_code"] == "BAD_REQUEST"  # MLflow: "Failed to convert column"


NINES = "9" * 5000
DIGITS = "the body holds a number of 5000 digits; numbers may have at most 4300 digits"


@pytest.mark.parametrize("path, content, status, expected", [
    ("/predict", b'{"features": [[1, NaN]]}', 400,
     {"error": "NaN is not a number: features must be finite numbers, and record values finite numbers or null"}),
    ("/predict", f'{{"records": [{{"x": 1, "y": {NINES}}}]}}'.encode(), 400, {"error": DIGITS}),
    ("/invocations", b'{"dataframe_records": [{"x": -Infinity, "y": 1}]}', 400,
     {"error_code": "BAD_REQUEST", "error": "-Infinity is not a number: the values of the rows must be finite "
      "numbers, or null for a missing value", "message": "-Infinity is not a number: the values of the rows "
      "must be finite numbers, or null for a missing value"}),
    ("/invocations", f'{{"inputs": [[1, {NINES}]]}}'.encode(), 400,
     {"error_code": "BAD_REQUEST", "error": DIGITS, "message": DIGITS}),
    ("/v2/models/M/infer", b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", '
                           b'"data": [Infinity, 1]}]}', 400,
     {"error": "Infinity is not a number: tensor data must be finite numbers"}),
    ("/v2/models/M/infer", f'{{"inputs": [{{"name": "input", "shape": [1, 2], "datatype": "INT64", '
                           f'"data": [1, -{NINES}]}}]}}'.encode(), 400, {"error": DIGITS}),
])
def test_json_literal_and_digit_refusals_are_worded_for_each_route(loaded, path, content, status, expected):
    """The JSON parser shared by the routes words these refusals in each route's own terms."""
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=100_000, request_timeout=5), api_key=None)
    response = _call(app, "POST", path, content=content, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (status, expected)
