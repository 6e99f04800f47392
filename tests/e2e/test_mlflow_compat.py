"""POST /invocations answers as `mlflow models serve` does for the same version (contract test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.servers import stop_process_group, wait_for_http
from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mlflow_serve(served, tmp_path_factory):
    """`mlflow models serve` on the production version, with the local environment."""
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m",
         "models:/ClassificationModel@production", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        # mlflow execs `uvicorn` from PATH: put this interpreter's bin folder first.
        env={**os.environ, "MLFLOW_TRACKING_URI": served.tracking_uri,
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", timeout=120, alive=lambda: process.poll() is None, log=log)
        yield url
    finally:
        stop_process_group(process)


def _bodies() -> dict[str, dict]:
    dataset = load_dataset("iris")
    rows = split_dataset(dataset, test_size=0.2, random_state=42).X_test.to_numpy().tolist()
    columns = dataset.feature_names
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": rows}},
        "dataframe_split reordered": {"dataframe_split": {
            "columns": columns[::-1], "data": [row[::-1] for row in rows]}},
        "dataframe_records": {"dataframe_records": [dict(zip(columns, row)) for row in rows]},
        "instances records": {"instances": [dict(zip(columns, row)) for row in rows]},
        "inputs columns": {"inputs": {c: [row[i] for row in rows] for i, c in enumerate(columns)}},
        "one record": {"dataframe_records": [dict(zip(columns, rows[0]))]},
    }


@pytest.mark.parametrize("name", list(_bodies()))
def test_same_predictions_as_mlflow_models_serve(served, mlflow_serve, name):
    body = _bodies()[name]
    theirs = httpx.post(f"{mlflow_serve}/invocations", json=body, timeout=30)
    ours = httpx.post(f"{served.url}/invocations", json=body, timeout=30)
    assert theirs.status_code == ours.status_code == 200, (theirs.text[:300], ours.text[:300])
    assert ours.json() == theirs.json()
    assert ours.json()["predictions"]


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]]}},
    {"dataframe_records": [{"sepal length (cm)": 1.0}]},
])
def test_both_refuse_columns_that_do_not_match(served, mlflow_serve, body):
    theirs = httpx.post(f"{mlflow_serve}/invocations", json=body, timeout=30)
    ours = httpx.post(f"{served.url}/invocations", json=body, timeout=30)
    assert 400 <= theirs.status_code < 500 and 400 <= ours.status_code < 500
    assert ours.json()["error_code"] == theirs.json()["error_code"] == "INVALID_PARAMETER_VALUE"
