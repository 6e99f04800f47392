"""The whole chain with artifacts on a real S3-compatible server (SeaweedFS), in MLflow's two modes.

proxied: `mlflow server --artifacts-destination s3://...`; the clients hold no S3 credentials.
direct: `mlflow server --no-serve-artifacts --default-artifact-root s3://...`; the clients write
to the bucket with their own keys and MLFLOW_S3_ENDPOINT_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, lr_grid
from tests.e2e.conftest import start_server
from tests.s3_registry import Registry, bucket_key, registry_fixture
from tests.seaweed import seaweed_module
from tests.servers import stop_process_group
from training.config import get_settings
from training.data import load_dataset, split_dataset
from training.promote import main as promote_main
from training.sweep import run_experiments

pytestmark = pytest.mark.e2e

seaweed = seaweed_module()
registry = registry_fixture()


def _run_files(client, run_id: str, path: str | None = None) -> list[str]:
    """Every artifact file of a run, as the tracking server lists them."""
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _run_files(client, run_id, item.path) if item.is_dir else [item.path]
    return files


def _downloaded(run_id: str, path: str, folder: Path) -> bytes:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(folder))).read_bytes()


@pytest.mark.parametrize("registry", ["proxied", "direct"], indirect=True)
def test_a_sweep_lands_in_the_bucket_and_is_promoted_imported_and_served(registry: Registry, seaweed,
                                                                         tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = run_experiments(dataset_name="iris", grid=lr_grid([1.0, 10.0], ["l2"]))
    assert promote_main([]) == 0
    client = mlflow.MlflowClient()
    settings = get_settings()
    stored = seaweed.objects(registry.bucket)

    # Every artifact of each run is in the bucket, with the bytes the tracking server lists.
    runs = [client.get_run(result.run_id) for result in results]
    runs.append(client.get_run(runs[0].data.tags["mlflow.parentRunId"]))
    scheme = {"proxied": "mlflow-artifacts:", "direct": f"s3://{registry.bucket}/"}[registry.mode]
    for run in runs:
        assert run.info.artifact_uri.startswith(scheme), run.info.artifact_uri
        files = _run_files(client, run.info.run_id)
        assert files, run.info.run_name
        for path in files:
            key = bucket_key(registry, run.info.artifact_uri, path)
            assert key in stored, (key, sorted(stored)[:20])
            assert stored[key] == _downloaded(run.info.run_id, path, tmp_path / "listing" / run.info.run_id)
    assert {"confusion_matrix.png", "scaler/scaler.skops", "evaluation/rows.json"} <= set(
        _run_files(client, results[0].run_id))
    # And each registered model's files (MLflow 3 keeps them apart from the run's).
    for result in results:
        version = client.get_model_version(settings.registered_model_name, result.version)
        model = mlflow.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
        mlmodel = bucket_key(registry, model.artifact_location, "MLmodel")
        assert mlmodel in stored and b"skops" in stored[mlmodel]
    assert sum(key.endswith("/MLmodel") for key in stored) == len(results)
    assert not any((tmp_path / name).exists() for name in ("mlartifacts", "mlruns"))
    assert not any((registry.server_cwd / name).exists() for name in ("mlartifacts", "mlruns"))

    # The documented import command, with the client's environment only.
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "import_production.py")],
                          cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    production = client.get_model_version_by_alias(settings.registered_model_name, "production")
    tag = f"classification_model:v{production.version}-{production.run_id[:12]}"
    assert proc.stdout.strip().splitlines()[-1].startswith(f"imported {tag} ")

    # `bentoml serve` answers as the registered model does.
    dataset = load_dataset("iris")
    rows = split_dataset(dataset, test_size=0.2, random_state=42).X_test
    expected = mlflow.sklearn.load_model(f"models:/{settings.registered_model_name}@production").predict_proba(rows)
    server = start_server(home=Path(os.environ["BENTOML_HOME"]))
    try:
        answer = httpx.post(f"{server.url}/predict", json={"features": rows.to_numpy().tolist()})
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{server.url}/health").json()["model"]["version"] == str(production.version)
    finally:
        stop_process_group(server.process)
    served = np.array([[p["probabilities"][c] for c in dataset.class_names] for p in answer.json()["predictions"]])
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
