"""The bench's wide table, each family: train -> promote -> import, then the served form answers like the registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import bentoml
import httpx
import mlflow
import numpy as np
import pytest

from data.make_accounts import ID_COLUMN, TARGET, make_accounts, write_table
from release.importer import import_production
from serving.core import Limits
from serving.http import ServingApp
from serving.model import load_model
from training.experiments import main as experiments_main
from training.promote import promote_best

pytestmark = pytest.mark.integration

# One grid point per family, small models (the answers, not the speed, are tested here): one run each.
FAMILY_ARGS = {
    "logistic_regression": ["--param", "C=1", "--param", "penalty=l2"],
    "random_forest": ["--param", "n_estimators=30", "--param", "max_depth=8"],
    "hist_gradient_boosting": ["--param", "max_iter=30", "--param", "max_leaf_nodes=15"],
}
UNSEEN = {"region": "atlantis", "plan": "platinum"}


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2000-row accounts table, written once for the three families."""
    path = tmp_path_factory.mktemp("accounts") / "accounts.csv"
    write_table(make_accounts(2000, seed=7), path)
    return path


def held_out_records() -> list[dict]:
    """Rows of another seed (never trained on), gaps in both kinds, two categories never seen."""
    frame = make_accounts(300, seed=8).drop(columns=[ID_COLUMN, TARGET])
    for row, (column, value) in enumerate(UNSEEN.items()):
        frame.loc[row, column] = value
    objects = frame.astype(object)
    return objects.where(objects.notna(), None).to_dict("records")


def predict_in_process(app: ServingApp, records: list[dict]) -> dict:
    """POST /predict {"records": ...} to the app, in this process."""
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/predict", content=json.dumps({"records": records}),
                                     headers={"Content-Type": "application/json"})
    response = asyncio.run(post())
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("family", list(FAMILY_ARGS))
def test_each_family_serves_the_wide_table_like_the_registered_model(family, accounts, mlflow_store,
                                                                      capsys):
    assert experiments_main(["--data", str(accounts), "--target", TARGET, "--drop", ID_COLUMN,
                             "--model", family, *FAMILY_ARGS[family]]) == 0
    promote_best()
    stored = bentoml.models.get(import_production().tag)
    loaded = load_model(Path(stored.path), stored.info.metadata, tag=str(stored.tag))
    assert len(loaded.schema.categorical) * 2 >= len(loaded.schema.features) >= 20
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=1000, max_body_bytes=8_000_000, request_timeout=30),
             api_key=None)

    records = held_out_records()
    answer = predict_in_process(app, records)
    served = np.array([[p["probabilities"][name] for name in loaded.class_names]
                       for p in answer["predictions"]])

    # The registered pipeline on the same rows, missing text as NaN as training reads it.
    import pandas as pd

    frame = pd.DataFrame(records)[loaded.schema.feature_names]
    frame[loaded.schema.numeric] = frame[loaded.schema.numeric].astype(np.float64)
    frame[loaded.schema.categorical] = frame[loaded.schema.categorical].fillna(np.nan)
    name = mlflow_store.registered_model_name
    expected = mlflow.sklearn.load_model(f"models:/{name}@production").predict_proba(frame)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    # One record a request takes the one-row lane (a Row of Python values): the same answers,
    # the unseen categories (records 0 and 1) and the gaps included.
    for i in range(6):
        one = predict_in_process(app, records[i:i + 1])["predictions"][0]["probabilities"]
        np.testing.assert_allclose([one[name] for name in loaded.class_names], expected[i], rtol=0, atol=1e-6)
    assert frame.isna().any(axis=None) and set(UNSEEN) <= set(loaded.schema.categorical)
    assert stored.info.metadata["served_form"] in {"linear", "onnx", "compiled", "sklearn"}
