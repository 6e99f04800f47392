"""Faults of the object store behind the registry: one line, an exit code of their own, nothing half-written.

A real SeaweedFS, stopped and started again by some tests (each puts it back before it ends).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from release.importer import main as import_main
from tests.conftest import REPO_ROOT, lr_grid
from tests.integration.test_faults import _model_store
from tests.s3_registry import forget_s3_clients, running_registry
from tests.seaweed import seaweed_module
from training.artifact_store import EXIT_CREDENTIALS, EXIT_NO_BUCKET, EXIT_STORE_DOWN
from training.config import get_settings
from training.experiments import main as experiments_main
from training.promote import promote_best
from training.sweep import run_experiments

pytestmark = pytest.mark.e2e

seaweed = seaweed_module()
WRONG_SECRET = "not-the-secret-0123456789"


def _run(main, args: list[str], capsys, **env: str) -> tuple[int, str]:
    """A command's main in this process, with these variables set: (exit code, its one line)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        forget_s3_clients()
        try:
            code = main(args)
        finally:
            forget_s3_clients()
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert "Traceback" not in out.out + out.err
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return code, lines[0]


def _nothing_logged() -> None:
    """No run and no registered version: the command stopped before writing anything."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(get_settings().experiment_name)
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
    assert client.search_model_versions(f"name = '{get_settings().registered_model_name}'") == []


@pytest.mark.parametrize("mode", ["proxied", "direct"])
def test_a_wrong_secret_key_is_one_line_naming_endpoint_and_bucket_never_the_secret(
        mode, seaweed, tmp_path, monkeypatch, capsys):
    wrong = {**seaweed.env(), "AWS_SECRET_ACCESS_KEY": WRONG_SECRET}
    options = {"server_env": wrong} if mode == "proxied" else {}
    with running_registry(monkeypatch, seaweed, tmp_path / "server", mode=mode, **options) as registry:
        client_env = {"AWS_SECRET_ACCESS_KEY": WRONG_SECRET} if mode == "direct" else {}
        code, line = _run(experiments_main, ["--C", "1", "--penalty", "l2"], capsys, **client_env)
        assert code == EXIT_CREDENTIALS, line
        assert registry.bucket in line and "refused" in line and "credentials" in line, line
        # Direct: the endpoint the client used; proxied: the tracking server it asked.
        assert (seaweed.endpoint if mode == "direct" else registry.url) in line, line
        assert WRONG_SECRET not in line and seaweed.admin.secret_key not in line
        _nothing_logged()


@pytest.mark.parametrize("mode", ["proxied", "direct"])
def test_a_missing_bucket_is_one_line_naming_it(mode, seaweed, tmp_path, monkeypatch, capsys):
    missing = f"missing-{mode}"
    with running_registry(monkeypatch, seaweed, tmp_path / "server", mode=mode, bucket=missing):
        code, line = _run(experiments_main, ["--C", "1", "--penalty", "l2"], capsys)
        assert code == EXIT_NO_BUCKET, line
        assert missing in line and "does not exist" in line, line
        _nothing_logged()
    assert missing not in {bucket["Name"] for bucket in seaweed.client().list_buckets()["Buckets"]}


def test_the_store_stopped_in_the_middle_of_an_import_leaves_the_bento_store_and_a_rerun_succeeds(
        seaweed, tmp_path, monkeypatch, capsys):
    """The object store goes away after the import has downloaded the model and before the run's files."""
    with running_registry(monkeypatch, seaweed, tmp_path / "server", mode="proxied"):
        run_experiments(dataset_name="iris", grid=lr_grid([1.0], ["l2"]))
        promote_best()
        home = Path(os.environ["BENTOML_HOME"])
        before = _model_store(home)
        # The import's first download (the registered model) really happens; then the store is
        # stopped, and the next downloads meet a dead store. The wrapper only times the fault.
        download, downloads = mlflow.artifacts.download_artifacts, []

        def download_then_stop_the_store(*args, **kwargs):
            path = download(*args, **kwargs)
            downloads.append(path)
            if len(downloads) == 1:
                seaweed.stop()
            return path

        monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download_then_stop_the_store)
        try:
            code, line = _run(import_main, [], capsys)
        finally:
            monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
            seaweed.start()
        assert len(downloads) == 1  # stopped after the model, before the run's files
        assert code == EXIT_STORE_DOWN, line
        assert "artifact store" in line, line
        assert _model_store(home) == before and not list(home.glob(".import-staging-*"))
        assert import_main([]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1].startswith("imported classification_model:v1-")


def test_the_store_stopped_during_a_sweep_fails_the_run_in_one_line(seaweed, tmp_path, monkeypatch):
    with running_registry(monkeypatch, seaweed, tmp_path / "server", mode="direct"):
        sweep = subprocess.Popen([sys.executable, "-m", "training.experiments", "--C", "0.1", "1", "10",
                                  "--penalty", "l2"], cwd=REPO_ROOT, env=dict(os.environ), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        try:
            for line in sweep.stdout:
                lines.append(line.rstrip())
                if line.startswith("run 1/3"):
                    seaweed.stop()  # the object store goes away mid-sweep
                    break
            lines += sweep.stdout.read().strip().splitlines()
            code = sweep.wait(timeout=300)
        finally:
            seaweed.start()
        assert code == EXIT_STORE_DOWN, "\n".join(lines)
        assert lines[-1].startswith("error: ") and seaweed.endpoint in lines[-1], lines[-5:]
        assert not any("Traceback" in line for line in lines), lines
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(get_settings().experiment_name)
        status = {run.info.run_name: run.info.status for run in client.search_runs([experiment.experiment_id])}
        assert status["iris-sweep"] == "FAILED", status
        assert sorted(status.values()) == ["FAILED", "FAILED", "FINISHED"], status
