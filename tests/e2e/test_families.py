"""Every model family, on a bundled dataset and on a CSV with missing values and text columns:
train -> promote -> import -> a real `bentoml serve`, whose answers equal the registered model's."""

from __future__ import annotations

import shutil

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, use_bentoml_home, use_store
from tests.e2e.conftest import start_server
from tests.e2e.test_serve import _rejected_by_reason
from tests.servers import stop_process_group
from serving.forms import PARALLEL_ROWS
from training.data import load_dataset, load_table, split_dataset
from training.sweep import run_experiments
from release.importer import import_production
from training.models import make_grid
from training.promote import promote_best

pytestmark = pytest.mark.e2e

# One small grid point per family: enough to exercise each served form.
POINTS = {"logistic_regression": {"C": (1.0,), "penalty": ("l2",)},
          "random_forest": {"n_estimators": (100,), "max_depth": (None,)},
          "hist_gradient_boosting": {"learning_rate": (0.1,), "max_leaf_nodes": (15,)}}
EXPECTED_FORM = {"logistic_regression": "linear", "random_forest": "onnx",
                 "hist_gradient_boosting": "compiled" if shutil.which("gcc") else "sklearn"}


def _dataset(name: str):
    if name == "churn":
        return load_table(REPO_ROOT / "data" / "churn.csv", target="churned", drop=["customer_id"])
    return load_dataset(name)


def _records(frame) -> list[dict]:
    """DataFrame rows as JSON records, with null for a missing value."""
    values = frame.astype(object).where(frame.notna(), None)
    return [dict(zip(frame.columns, row)) for row in values.to_numpy().tolist()]


@pytest.mark.parametrize("dataset_name", ["iris", "churn"])
@pytest.mark.parametrize("family", list(POINTS))
def test_served_rows_equal_the_registered_model(tmp_path, monkeypatch, family, dataset_name):
    settings = use_store(monkeypatch, tmp_path / "store")
    home = use_bentoml_home(monkeypatch, tmp_path / "bentoml")
    dataset = _dataset(dataset_name)
    run_experiments(dataset=dataset, grid=make_grid([family], POINTS[family]))
    promote_best()
    imported = import_production()
    assert imported.form == EXPECTED_FORM[family]

    split = split_dataset(dataset, test_size=0.2, random_state=42)
    # The held-out rows, plus rows the import's check did not see: the training rows, and
    # (for text columns) a category never seen in training; then all of them again, for a
    # request large enough to be scored on the model's two threads (PARALLEL_ROWS).
    rows = split.X_test.copy()
    rows = pd.concat([rows, split.X_train.iloc[:40]], ignore_index=True)
    if dataset.categorical_features:
        rows.loc[len(rows) - 1, dataset.categorical_features[0]] = "never seen in training"
    rows = pd.concat([rows] * -(-2 * PARALLEL_ROWS // len(rows)), ignore_index=True)
    model = mlflow.sklearn.load_model(f"models:/{settings.registered_model_name}@production")
    expected = model.predict_proba(rows)

    server = start_server(home=home, env={"MODEL_THREADS": "2"})
    try:
        health = httpx.get(f"{server.url}/health").json()["model"]
        assert health["served_form"] == imported.form
        # The tree forms take the threads; the linear form's one matrix product is BLAS's to split.
        assert health["threads"] == (2 if imported.form in ("onnx", "compiled") else 1)
        assert [f["type"] for f in health["inputs"]] == [
            "category" if n in dataset.categorical_features else "number" for n in dataset.feature_names]
        answer = httpx.post(f"{server.url}/predict", json={"records": _records(rows)})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        served = np.array([[p["probabilities"][c] for c in dataset.class_names] for p in predictions])
        assert [p["class_index"] for p in predictions] == expected.argmax(axis=1).tolist()
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
        mlflow_style = httpx.post(f"{server.url}/invocations", json={"dataframe_records": _records(rows)})
        assert mlflow_style.json() == {"predictions": model.predict(rows).tolist()}
        if not dataset.categorical_features:  # all-numeric models also take plain rows
            plain = httpx.post(f"{server.url}/predict", json={"features": rows.to_numpy().tolist()})
            assert plain.json()["predictions"] == predictions
    finally:
        stop_process_group(server.process)


def test_text_column_refusals_are_counted_once_under_their_reason(tmp_path, monkeypatch):
    """The refusals only a model with text columns gives (needs_records, not_text), on a real
    server: each a 4xx with its sentence, counted once under its reason and under no other."""
    use_store(monkeypatch, tmp_path / "store")
    home = use_bentoml_home(monkeypatch, tmp_path / "bentoml")
    dataset = _dataset("churn")
    run_experiments(dataset=dataset, grid=make_grid(["logistic_regression"], POINTS["logistic_regression"]))
    promote_best()
    import_production()
    record = _records(dataset.X.dropna().iloc[:1])[0]
    text_column = dataset.categorical_features[0]
    not_text = f"row 0, column {text_column!r}: 3 is not text"
    sent = [  # reason, path, body, status, answer
        ("needs_records", "/predict", {"features": [list(record.values())]}, 422,
         {"error": 'this model has text columns: send rows as {"records": [{"column": value, ...}]}'}),
        ("not_text", "/predict", {"records": [{**record, text_column: 3}]}, 422, {"error": not_text}),
        ("not_text", "/invocations", {"dataframe_records": [{**record, text_column: 3}]}, 400,
         {"error_code": "INVALID_PARAMETER_VALUE", "message": not_text, "error": not_text}),
    ]

    server = start_server(home=home)
    try:
        for reason, path, body, status, answer in sent:
            before = _rejected_by_reason(httpx.get(f"{server.url}/metrics").text)
            response = httpx.post(f"{server.url}{path}", json=body)
            assert (response.status_code, response.json()) == (status, answer)
            after = _rejected_by_reason(httpx.get(f"{server.url}/metrics").text)
            assert {key: after[key] - before[key] for key in after if after[key] != before[key]} == {reason: 1}
    finally:
        stop_process_group(server.process)
