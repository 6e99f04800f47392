"""HTTP contract of a real `bentoml serve` process (127.0.0.1 only)."""

from __future__ import annotations

import json

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.e2e

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def production(served):
    """The production version as the registry sees it."""
    mlflow.set_tracking_uri(served.tracking_uri)
    mlflow.set_registry_uri(served.tracking_uri)
    return mlflow.MlflowClient().get_model_version_by_alias("ClassificationModel", "production")


def test_health_reports_the_promoted_version(served, production):
    response = httpx.get(f"{served.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    model = body["model"]
    assert model["name"] == "ClassificationModel"
    assert model["version"] == str(production.version)
    assert model["run_id"] == production.run_id
    assert model["dataset"] == "iris"
    assert model["classes"] == ["setosa", "versicolor", "virginica"]
    assert len(model["features"]) == 4
    run = mlflow.get_run(production.run_id)
    assert model["metrics"]["f1"] == pytest.approx(run.data.metrics["f1"])


def test_predict_matches_the_registered_model_on_the_test_split(served, production):
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    frame = pd.DataFrame(split.X_test, columns=dataset.feature_names)
    uri = "models:/ClassificationModel@production"
    expected_labels = np.asarray(mlflow.pyfunc.load_model(uri).predict(frame))
    expected_proba = mlflow.sklearn.load_model(uri).predict_proba(frame)

    response = httpx.post(f"{served.url}/predict", json={"features": split.X_test.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "ClassificationModel", "version": str(production.version)}
    predictions = body["predictions"]
    assert [p["class_index"] for p in predictions] == expected_labels.tolist()
    assert [p["label"] for p in predictions] == [dataset.class_names[i] for i in expected_labels]
    got = np.array([[p["probabilities"][name] for name in dataset.class_names] for p in predictions])
    np.testing.assert_allclose(got, expected_proba, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


def test_a_flat_row_is_one_prediction(served):
    response = httpx.post(f"{served.url}/predict", json={"features": IRIS_ROW})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1
    assert response.json()["predictions"][0]["label"] == "setosa"


BAD_REQUESTS = [
    ("wrong row length", {"json": {"features": [[1.0, 2.0, 3.0]]}}, 422),
    ("ragged rows", {"json": {"features": [IRIS_ROW, [1.0]]}}, 422),
    ("string value", {"json": {"features": [[1.0, "a", 3.0, 4.0]]}}, 422),
    ("boolean value", {"json": {"features": [[1.0, True, 3.0, 4.0]]}}, 422),
    ("null value", {"json": {"features": [[1.0, None, 3.0, 4.0]]}}, 422),
    ("null features", {"json": {"features": None}}, 400),
    ("NaN literal", {"content": b'{"features": [[NaN, 1, 2, 3]]}'}, 400),
    ("Infinity literal", {"content": b'{"features": [[Infinity, 1, 2, 3]]}'}, 400),
    ("float64 overflow", {"content": b'{"features": [[1e999, 1, 2, 3]]}'}, 422),
    ("empty list", {"json": {"features": []}}, 400),
    ("empty body", {"content": b""}, 400),
    ("malformed JSON", {"content": b'{"features": [[1, 2'}, 400),
    ("top-level array", {"json": [IRIS_ROW]}, 400),
    ("unknown key", {"json": {"features": [IRIS_ROW], "extra": 1}}, 400),
    ("duplicate keys", {"content": b'{"features": [[1,2,3,4]], "features": [[1,2,3,4]]}'}, 400),
    ("too many rows", {"json": {"features": [IRIS_ROW] * 10_001}}, 422),
    ("values out of range", {"json": {"features": [[1.7e308, -1.7e308, 1.7e308, 0.0]]}}, 422),
    ("invalid UTF-8", {"content": b'{"features": [[1, 2, 3, "\xff"]]}'}, 400),
    ("deep nesting", {"content": b'{"features": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"}, 400),
]


@pytest.mark.parametrize("name, kwargs, status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_with_an_error_sentence(served, name, kwargs, status):
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{served.url}/predict", headers=headers, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str) and len(message) > 10


def test_wrong_content_type_is_415(served):
    response = httpx.post(f"{served.url}/predict", content=json.dumps({"features": [IRIS_ROW]}),
                          headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_wrong_method_is_405(served):
    response = httpx.get(f"{served.url}/predict")
    assert response.status_code == 405
    assert response.json()["error"]


def test_bentoml_endpoints_stay_available(served):
    for path in ("/livez", "/readyz", "/metrics", "/"):
        assert httpx.get(f"{served.url}{path}").status_code == 200, path
    spec = httpx.get(f"{served.url}/docs.json").json()
    assert {"/health", "/predict"} <= set(spec["paths"])


def test_service_survives_bad_input(served):
    before = httpx.post(f"{served.url}/predict", json={"features": [IRIS_ROW]}).json()
    for _, kwargs, _ in BAD_REQUESTS:
        httpx.post(f"{served.url}/predict", headers={"content-type": "application/json"},
                   timeout=30, **kwargs)
    assert httpx.get(f"{served.url}/health").status_code == 200
    assert httpx.post(f"{served.url}/predict", json={"features": [IRIS_ROW]}).json() == before


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/no-such-path", 404), ("POST", "/predict/extra", 404), ("DELETE", "/health", 405),
    ("PUT", "/predict", 405), ("POST", "/livez", 405)])
def test_unknown_paths_and_methods_answer_json(served, method, path, status):
    response = httpx.request(method, f"{served.url}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]
