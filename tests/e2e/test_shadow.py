"""A challenger in the shadow of a real `bentoml serve`: two imported versions in one BentoML home."""

from __future__ import annotations

import shutil
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import use_bentoml_home, use_store
from tests.e2e.conftest import start_server
from tests.servers import metric_total, stop_process_group
from training.data import load_dataset

pytestmark = pytest.mark.e2e

NAME = "ClassificationModel"


def _weakest_version(client) -> str:
    """The version trained with the strongest l1 penalty (C=0.1): the one that disagrees most."""
    for version in client.search_model_versions(f"name = '{NAME}'"):
        params = client.get_run(version.run_id).data.params
        if float(params["C"]) == 0.1 and params["penalty"] == "l1":
            return str(version.version)
    raise AssertionError("the trained sweep has no C=0.1 l1 version")


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory, trained_template):
    """The promoted version served, another version of the same sweep as its challenger."""
    directory = tmp_path_factory.mktemp("shadowed")
    shutil.copy(trained_template / "mlflow.db", directory / "mlflow.db")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_store(monkeypatch, directory)
        home = use_bentoml_home(monkeypatch, directory / "bentoml")
        from release.importer import import_production
        from training.promote import promote_best

        production = promote_best()
        client = mlflow.MlflowClient()
        challenger_version = _weakest_version(client)
        assert challenger_version != production.version
        client.set_registered_model_alias(NAME, "challenger", challenger_version)
        challenger = import_production(alias="challenger").tag
        served = import_production().tag
        server = start_server(home=home, env={"BENTO_MODEL_TAG": served, "SHADOW_MODEL_TAG": challenger})
        models = {which: mlflow.sklearn.load_model(f"models:/{NAME}/{version}")
                  for which, version in (("production", production.version), ("challenger", challenger_version))}
    yield server, challenger, challenger_version, models
    stop_process_group(server.process)


def _rows(count: int) -> pd.DataFrame:
    """Rows spread over iris' ranges, where two regularisations disagree now and then."""
    dataset = load_dataset("iris")
    low, high = dataset.X.min().to_numpy(), dataset.X.max().to_numpy()
    values = np.random.default_rng(23).uniform(low, high, size=(count, len(low)))
    return pd.DataFrame(values, columns=dataset.feature_names)


def test_metadata_names_the_challenger(shadowed):
    server, tag, version, _ = shadowed
    named = httpx.get(f"{server.url}/metadata").json()["shadow"]
    assert named["bento_tag"] == tag and named["version"] == version and named["status"] == "scoring"


def test_the_agreement_reported_is_the_agreement_computed_offline(shadowed):
    server, tag, _, models = shadowed
    rows = _rows(60)
    data = rows.to_numpy().tolist()
    answered = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for row in data[:5]:  # the one-row lane
            answered += client.post("/predict", json={"features": [row]}).json()["predictions"]
        answered += client.post("/predict", json={"features": data[5:25]}).json()["predictions"]
        answered += [{"class_index": index} for index in client.post("/invocations", json={
            "dataframe_split": {"columns": list(rows.columns), "data": data[25:45]}}).json()["predictions"]]
        infer = client.post(f"/v2/models/{NAME}/infer", json={"inputs": [{
            "name": "input", "shape": [15, 4], "datatype": "FP64", "data": np.ravel(data[45:]).tolist()}]}).json()
        answered += [{"class_index": index} for index in next(
            output for output in infer["outputs"] if output["name"] == "class_index")["data"]]
        classes = client.get("/metadata").json()["classes"]
        deadline = time.monotonic() + 60
        page = client.get("/metrics").text
        # Scored off the answers' path: wait (a bounded wait, not a measured time) for all 60 rows.
        while metric_total(page, "shadow_rows_total", challenger=tag) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
            page = client.get("/metrics").text
    mine = models["production"].predict_proba(rows)
    theirs = models["challenger"].predict_proba(rows)
    # The answers are production's own, whatever the challenger said.
    assert [p["class_index"] for p in answered] == mine.argmax(axis=1).tolist()
    agreed = int((mine.argmax(axis=1) == theirs.argmax(axis=1)).sum())
    assert 0 < agreed < 60, "the two versions should disagree on some rows, or the test shows little"
    assert metric_total(page, "shadow_rows_total", challenger=tag) == 60
    assert metric_total(page, "shadow_label_agreements_total", challenger=tag) == agreed
    assert metric_total(page, "shadow_probability_difference_sum", challenger=tag) == pytest.approx(
        np.abs(mine - theirs).mean(axis=1).sum(), rel=1e-6)
    assert metric_total(page, "shadow_probability_difference_count", challenger=tag) == 60
    # Each table request is timed, and one one-row request of each pass of the thread (5 came).
    assert 3 < metric_total(page, "shadow_latency_seconds_count", challenger=tag) <= 3 + 5
    for index, label in enumerate(classes):
        counted = metric_total(page, "shadow_predictions_total", challenger=tag, label=label)
        assert counted == (theirs.argmax(axis=1) == index).sum()
    assert metric_total(page, "shadow_dropped_requests_total", challenger=tag) == 0
    assert metric_total(page, "shadow_errors_total", challenger=tag) == 0
