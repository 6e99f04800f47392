"""POST /invocations answers as `mlflow models serve` does for the same version (contract test)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.servers import launch_and_wait, start_on_free_port, stop_process_group
from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mlflow_serve(served, tmp_path_factory):
    """`mlflow models serve` on the production version, with the local environment."""
    log = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"

    def start(port: int) -> tuple[subprocess.Popen, str]:
        url = f"http://127.0.0.1:{port}"
        process = launch_and_wait(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m",
             "models:/ClassificationModel@production", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            ready_url=f"{url}/ping", log=log, timeout=120, interval=0.5,
            # mlflow execs `uvicorn` from PATH: put this interpreter's bin folder first.
            env={**os.environ, "MLFLOW_TRACKING_URI": served.tracking_uri,
                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
        return process, url

    process, url = start_on_free_port(start)  # another port if this one was taken meanwhile
    try:
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


# MLflow's own client, CSV bodies, /ping and /version, and the statuses of refusals

def _held_out() -> pd.DataFrame:
    dataset = load_dataset("iris")
    return split_dataset(dataset, test_size=0.2, random_state=42).X_test.reset_index(drop=True)


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    return parsed.hostname, parsed.port


@pytest.mark.parametrize("params", [None, {"temperature": 0.5, "unknown": [1, 2]}])
def test_mlflow_scoring_client_works_unchanged(served, mlflow_serve, params):
    """ScoringServerClient waits for /ping and posts dataframe_split (and params, ignored) as for MLflow."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame = _held_out()
    answers = []
    for url in (mlflow_serve, served.url):
        client = ScoringServerClient(*_host_port(url))
        client.wait_server_ready(timeout=30)
        answers.append(client.invoke(frame, params=params))
    theirs, ours = answers
    assert ours["predictions"] == theirs["predictions"] and len(ours["predictions"]) == len(frame)
    expected = httpx.post(f"{served.url}/predict", json={"features": frame.to_numpy().tolist()}, timeout=30)
    assert [p["class_index"] for p in expected.json()["predictions"]] == ours["predictions"]
    np.testing.assert_array_equal(ours.get_predictions(predictions_format="ndarray"),
                                  theirs.get_predictions(predictions_format="ndarray"))


def _csv_bodies() -> dict[str, bytes]:
    frame = _held_out()
    shuffled = frame[[frame.columns[i] for i in (2, 0, 3, 1)]]
    with_gap = shuffled.copy()
    with_gap.iloc[0, 1] = np.nan  # an empty cell: imputed as in training by both servers
    return {
        "header row": frame.to_csv(index=False).encode(),
        "shuffled columns": shuffled.to_csv(index=False).encode(),
        "DataFrame.to_csv() with its index": shuffled.to_csv().encode(),
        "CRLF, quoted, BOM": b"\xef\xbb\xbf" + shuffled.to_csv(index=False, lineterminator="\r\n",
                                                                 quoting=csv.QUOTE_ALL).encode(),
        "an empty cell": with_gap.to_csv(index=False).encode(),
    }


@pytest.mark.parametrize("name", list(_csv_bodies()))
@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8"])
def test_csv_bodies_get_mlflows_answer(served, mlflow_serve, name, content_type):
    body = _csv_bodies()[name]
    headers = {"Content-Type": content_type}
    theirs = httpx.post(f"{mlflow_serve}/invocations", content=body, headers=headers, timeout=30)
    ours = httpx.post(f"{served.url}/invocations", content=body, headers=headers, timeout=30)
    assert theirs.status_code == ours.status_code == 200, (theirs.text[:300], ours.text[:300])
    assert ours.json() == theirs.json()
    assert len(ours.json()["predictions"]) == len(_held_out())


@pytest.mark.parametrize("path", ["/ping", "/version"])
def test_ping_and_version_answer_as_mlflow(served, mlflow_serve, path):
    theirs, ours = httpx.get(f"{mlflow_serve}{path}"), httpx.get(f"{served.url}{path}")
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content) \
        == (200, b"\n" if path == "/ping" else theirs.content)
    assert ours.headers.get_list("content-type") == theirs.headers.get_list("content-type") \
        == ["application/json"]


def test_version_is_the_one_recorded_in_the_model(served):
    mlflow.set_tracking_uri(served.tracking_uri)
    mlflow.set_registry_uri(served.tracking_uri)
    recorded = mlflow.models.get_model_info("models:/ClassificationModel@production").mlflow_version
    assert recorded and httpx.get(f"{served.url}/version").text == recorded


def _missing_column_csv() -> bytes:
    return _held_out().drop(columns=["petal width (cm)"]).to_csv(index=False).encode()


def _not_a_number_csv() -> bytes:
    frame = _held_out().astype(object)
    frame.iloc[1, 2] = "abc"
    return frame.to_csv(index=False).encode()


JSON = "application/json"
REFUSALS = {
    "malformed JSON": (b'{"dataframe_split": ', JSON),
    "not UTF-8 JSON": (b'{"dataframe_records": "\xff"}', JSON),
    "unknown format key": (b'{"dataframe": {"columns": [], "data": []}}', JSON),
    "two format keys": (b'{"dataframe_records": [], "inputs": []}', JSON),
    "a list, not an object": (b"[[5.1, 3.5, 1.4, 0.2]]", JSON),
    "JSON record missing a column": (b'{"dataframe_records": [{"sepal length (cm)": 1.0}]}', JSON),
    "wrong content type": (b'{"inputs": []}', "text/plain"),
    "CSV: a missing column": (_missing_column_csv(), "text/csv"),
    "CSV: not a number": (_not_a_number_csv(), "text/csv"),
    "CSV: empty body": (b"", "text/csv"),
    "CSV: a header, no rows": (_held_out().iloc[:0].to_csv(index=False).encode(), "text/csv"),
    "CSV: not UTF-8": (b"\xff\xfe" + _missing_column_csv(), "text/csv"),
    "CSV: a charset other than UTF-8": (_held_out().to_csv(index=False).encode(), "text/csv; charset=latin-1"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_have_mlflows_status_and_error_code(served, mlflow_serve, name):
    body, content_type = REFUSALS[name]
    headers = {"Content-Type": content_type}
    theirs = httpx.post(f"{mlflow_serve}/invocations", content=body, headers=headers, timeout=30)
    ours = httpx.post(f"{served.url}/invocations", content=body, headers=headers, timeout=30)
    assert 400 <= theirs.status_code < 500, theirs.text[:300]
    assert ours.status_code == theirs.status_code, (theirs.text[:300], ours.text[:300])
    document = ours.json()
    assert document["message"] == document["error"] and document["message"]
    if theirs.headers["content-type"].startswith(JSON):  # MLflow's 415 is a plain-text sentence
        assert document["error_code"] == theirs.json()["error_code"], (theirs.text[:300], ours.text[:300])
