"""The endpoints at the ASGI level, in-process (no server): readiness and the error paths."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from serving.app import PredictionApp
from serving.model import load_model
from serving.predictor import LinearPredictor
from tests.unit.conftest import save_model_folder

pytestmark = pytest.mark.unit


def _call(app: PredictionApp, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


@pytest.fixture
def loaded(tmp_path):
    predictor = LinearPredictor(mean=np.zeros(2), scale=np.ones(2),
                                coef=np.array([[1.0, -1.0]]), intercept=np.zeros(1))
    metadata = save_model_folder(tmp_path, predictor, class_names=["no", "yes"], version="7")
    return load_model(tmp_path, metadata, tag="m:v7")


def test_before_binding_health_is_503_and_predict_refuses():
    app = PredictionApp()
    health = _call(app, "GET", "/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    predict = _call(app, "POST", "/predict", json={"features": [[1.0, 2.0]]})
    assert predict.status_code == 503 and predict.json()["error"]


def test_bound_app_predicts_a_binary_model(loaded):
    app = PredictionApp()
    app.bind(loaded, max_rows=10, max_body_bytes=10_000, request_timeout=5, api_key=None)
    response = _call(app, "POST", "/predict", json={"features": [[3.0, 1.0], [0.0, 2.0]]})
    assert response.status_code == 200
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == ["yes", "no"]  # score x - y: positive -> class 1
    assert response.json()["model"] == {"name": "M", "version": "7"}


def test_an_unexpected_error_is_a_json_500_and_the_app_keeps_serving(loaded):
    app = PredictionApp()
    app.bind(loaded, max_rows=10, max_body_bytes=10_000, request_timeout=5, api_key=None)

    def broken(X):
        raise RuntimeError("boom")

    # A stand-in for a bug of ours: the (frozen) predictor gets a method that raises.
    object.__setattr__(loaded.predictor, "predict_proba", broken)
    response = _call(app, "POST", "/predict", json={"features": [[1.0, 2.0]]})
    assert response.status_code == 500
    assert "internal error" in response.json()["error"]
    assert _call(app, "GET", "/health").status_code == 200
