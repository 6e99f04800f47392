"""Faults in the command-line tools: one clear line, a non-zero exit, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO_ROOT
from tests.integration.test_import import _store_snapshot
from training.experiments import main as experiments_main
from training.importer import STAGING_PREFIX, import_production
from training.importer import main as import_main
from training.promote import promote_best

pytestmark = pytest.mark.integration


def _run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_alias_on_a_deleted_version_is_one_line_and_no_import(trained_store, capsys):
    client = mlflow.MlflowClient()
    name = trained_store.registered_model_name
    promote_best()
    target = str(client.get_model_version_by_alias(name, "production").version)
    client.delete_model_version(name, target)
    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    assert import_main([]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: no production version")
    assert _store_snapshot(home) == before


def test_unwritable_bentoml_store_is_one_line(trained_store, tmp_path):
    promote_best()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the BentoML home should be")
    proc = _run_cli(["scripts/import_production.py"], BENTOML_HOME=str(blocker / "home"),
                    MLFLOW_TRACKING_URI=trained_store.tracking_uri)
    assert proc.returncode == 1
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "Traceback" not in proc.stderr


def test_import_killed_midway_leaves_no_partial_model(trained_store, tmp_path):
    promote_best()
    home = Path(os.environ["BENTOML_HOME"])
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained_store.tracking_uri}
    # Time a whole import elsewhere, then kill imports at points spread over its second half,
    # where it downloads, converts and writes.
    started = time.monotonic()
    subprocess.run([sys.executable, "scripts/import_production.py"], cwd=REPO_ROOT, check=True,
                   env={**env, "BENTOML_HOME": str(tmp_path / "timing")}, capture_output=True)
    duration = time.monotonic() - started
    for delay in (0.6 * duration, 0.8 * duration, 0.9 * duration, 0.97 * duration):
        process = subprocess.Popen([sys.executable, "scripts/import_production.py"], cwd=REPO_ROOT,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        models = home / "models" / "classification_model"
        for version in (p for p in models.glob("v*") if p.is_dir()) if models.exists() else []:
            # Whatever is in the store is complete: published by one rename.
            assert (version / "model.yaml").exists() and (version / "linear_params.npz").exists()
    result = import_production()  # a later import finishes and sweeps the staging leftovers
    assert not list(home.glob(f"{STAGING_PREFIX}*"))
    assert (home / "models" / "classification_model" / result.tag.split(":")[1] / "model.yaml").exists()


def test_failed_training_run_is_marked_failed(mlflow_store, tmp_path, capsys):
    assert experiments_main(["--C", "1", "--penalty", "l2"]) == 0
    experiment = mlflow.get_experiment_by_name(mlflow_store.experiment_name)
    artifacts = Path(experiment.artifact_location.removeprefix("file://"))
    # Artifacts can no longer be written: a file now stands where the folder was.
    os.rename(artifacts, tmp_path / "moved")
    artifacts.write_text("blocked")
    capsys.readouterr()
    assert experiments_main(["--C", "10", "--penalty", "l1"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: training failed"), out
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 2  # the sweep and its child
    client = mlflow.MlflowClient()
    assert len(client.search_model_versions(f"name = '{mlflow_store.registered_model_name}'")) == 1


def test_tracking_server_dying_mid_sweep_is_one_line(tmp_path):
    """A real `mlflow server`, stopped while the experiments command is logging to it."""
    from tests.servers import start_mlflow_server, stop_process_group

    server, url = start_mlflow_server(backend_store_uri=f"sqlite:///{tmp_path / 'server.db'}",
                                      artifacts=tmp_path / "artifacts", cwd=tmp_path,
                                      log=tmp_path / "server.log")
    try:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "training.experiments"], cwd=REPO_ROOT, text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": url},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        for line in sweep.stdout:
            lines.append(line.rstrip())
            if line.startswith("run 1/6"):
                stop_process_group(server)  # the server goes away mid-sweep
                break
        lines += sweep.stdout.read().strip().splitlines()
        assert sweep.wait(timeout=300) == 1
    finally:
        stop_process_group(server)
    assert lines[-1].startswith("error:"), lines[-5:]
    assert not any("Traceback" in line for line in lines), lines
    progress = [line for line in lines if line.startswith("run ")]
    assert progress and len(progress) < 6
