"""The experiments command against a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from training.config import METRICS, get_settings
from training.experiments import main as experiments_main
from training.models import make_grid
from training.sweep import run_experiments

pytestmark = pytest.mark.integration

PARAMS = {"model", "C", "penalty", "solver", "dataset_name", "data_sha256", "n_rows", "n_columns",
          "test_size", "random_state", "n_train", "n_test"}
RUN_ARTIFACTS = {"confusion_matrix.png", "classification_report.txt", "classification_report.json",
                 "schema.json", "feature_stats.json", "scaler/scaler.skops", "evaluation/rows.json"}
CHURN = Path(__file__).resolve().parents[2] / "data" / "churn.csv"


def _artifact_paths(client, run_id, path=None):
    paths = set()
    for item in client.list_artifacts(run_id, path):
        paths |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


def test_default_sweep_logs_six_complete_runs_and_versions(trained_template, monkeypatch, mlflow_uris):
    from tests.conftest import use_store

    settings = use_store(monkeypatch, trained_template)
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 6 and len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    grid = {(float(r.data.params["C"]), r.data.params["penalty"]) for r in children}
    assert grid == {(c, p) for c in (0.1, 1.0, 10.0) for p in ("l1", "l2")}
    for run in children:
        assert PARAMS <= set(run.data.params)
        assert set(METRICS) <= set(run.data.metrics)
        assert run.data.params["dataset_name"] == "iris"
        assert int(run.data.params["n_train"]) + int(run.data.params["n_test"]) == 150
        assert RUN_ARTIFACTS <= _artifact_paths(client, run.info.run_id)
        assert run.info.status == "FINISHED"
    assert {"comparison_f1.png", "comparison.txt"} <= _artifact_paths(client, parents[0].info.run_id)

    versions = client.search_model_versions(f"name = '{settings.registered_model_name}'")
    assert len(versions) == 6
    assert {v.run_id for v in versions} == {r.info.run_id for r in children}
    for version in versions:
        assert version.description and "LogisticRegression" in version.description
        assert version.tags["dataset"] == "iris"
        run = client.get_run(version.run_id)
        assert float(version.tags["f1"]) == pytest.approx(run.data.metrics["f1"], abs=1e-6)


def test_registered_model_predicts_from_raw_features(trained_template, monkeypatch, mlflow_uris):
    """The registered pipeline scales by itself: pyfunc on raw rows matches the logged scaler path."""
    import numpy as np
    import skops.io

    from tests.conftest import use_store
    from training.data import load_dataset, split_dataset

    settings = use_store(monkeypatch, trained_template)
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient()
    name = settings.registered_model_name
    version = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    frame = split.X_test
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    labels = np.asarray(model.predict(frame))
    scaler_file = mlflow.artifacts.download_artifacts(run_id=version.run_id,
                                                      artifact_path="scaler/scaler.skops")
    scaler = skops.io.load(scaler_file, trusted=skops.io.get_untrusted_types(file=scaler_file))
    classifier = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")[-1]
    np.testing.assert_array_equal(labels, classifier.predict(scaler.transform(frame)))
    # Skipping the scaler would give different answers: the test above can fail.
    assert not np.array_equal(classifier.predict(frame.to_numpy()), labels)


def test_same_command_twice_gives_identical_metrics(mlflow_store):
    grid = make_grid(["logistic_regression", "random_forest", "hist_gradient_boosting"],
                     {"C": (0.5,), "n_estimators": (100,), "max_depth": (None,), "learning_rate": (0.1,),
                      "max_leaf_nodes": (15,)})
    assert len(grid) == 4
    first = run_experiments(dataset_name="wine", grid=grid)
    second = run_experiments(dataset_name="wine", grid=grid)
    assert [r.metrics for r in first] == [r.metrics for r in second]
    # Each run registers a new version after those of the first command.
    assert [int(r.version) for r in second] == [int(r.version) + len(first) for r in first]


def test_a_sweep_of_three_families_on_a_csv_with_missing_values_and_text(mlflow_store, capsys):
    code = experiments_main(["--data", str(CHURN), "--target", "churned", "--drop", "customer_id",
                             "--model", "logistic_regression", "random_forest", "hist_gradient_boosting",
                             "--param", "C=1", "--param", "n_estimators=100", "--param", "learning_rate=0.1"])
    assert code == 0
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{mlflow_store.registered_model_name}'")
    # Each family's default grid, with the overridden parameter fixed: 2 + 2 + 2 points.
    assert sorted(v.tags["model"] for v in versions) == sorted(
        ["logistic_regression"] * 2 + ["random_forest"] * 2 + ["hist_gradient_boosting"] * 2)
    import hashlib

    digest = hashlib.sha256(CHURN.read_bytes()).hexdigest()
    for version in versions:
        assert version.tags["dataset"] == "churn" and version.tags["data_sha256"] == digest
        run = client.get_run(version.run_id)
        assert run.data.params["model"] == version.tags["model"]
        assert run.data.params["n_rows"] == "400" and run.data.params["n_columns"] == "5"
        assert {"random_state", "data_sha256"} <= set(run.data.params)
    schema = mlflow.artifacts.load_dict(f"runs:/{versions[0].run_id}/schema.json")
    types = {f["name"]: f["type"] for f in schema["features"]}
    assert types == {"tenure_months": "number", "monthly_charges": "number", "support_calls": "number",
                     "contract": "category", "payment_method": "category"}
    rows = mlflow.artifacts.load_dict(f"runs:/{versions[0].run_id}/evaluation/rows.json")
    assert len(rows["data"]) == 80 and any(None in row for row in rows["data"])


BAD_TABLES = {
    "missing file": (None, "churned", "not found"),
    "empty": ("", "churned", "empty"),
    "no target": ("a,b\n1,2\n3,4\n", "churned", "churned"),
    "one class": ("a,y\n" + "1,x\n" * 20, "y", "one class"),
    "too few rows in a class": ("a,y\n" + "1,x\n" * 20 + "2,z\n", "y", "'z'"),
    "duplicate columns": ("a,a,y\n" + "1,2,x\n3,4,z\n" * 10, "y", "duplicate"),
    "all-empty column": ("a,b,y\n" + "1,,x\n3,,z\n" * 10, "y", "'b'"),
    "no features left": ("a,y\n" + "1,x\n3,z\n" * 10, "y", "no feature"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_bad_table_is_one_line_exit_1_and_nothing_is_logged(mlflow_store, tmp_path, capsys, case):
    content, target, fragment = BAD_TABLES[case]
    path = tmp_path / "table.csv"
    if content is not None:
        path.write_text(content)
    drop = ["--drop", "a"] if case == "no features left" else []
    code = experiments_main(["--data", str(path), "--target", target, *drop])
    output = capsys.readouterr()
    lines = [line for line in (output.out + output.err).splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0].lower(), lines
    client = mlflow.MlflowClient()
    assert client.search_registered_models() == []
    assert mlflow.get_experiment_by_name(mlflow_store.experiment_name) is None


def test_registered_name_comes_from_the_environment(mlflow_store, monkeypatch):
    monkeypatch.setenv("REGISTERED_MODEL_NAME", "OtherName")
    get_settings.cache_clear()
    assert experiments_main(["--C", "1", "--penalty", "l2"]) == 0
    client = mlflow.MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'OtherName'")] == ["1"]


def test_bad_grid_value_is_a_usage_error(mlflow_store, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["--C", "-1"])
    assert exit_info.value.code == 2
    assert "C must be a positive number" in capsys.readouterr().err


def test_a_sweep_prints_progress_and_no_mlflow_chatter(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "training.experiments", "--C", "1", "10", "--penalty", "l2"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    lines = proc.stdout.splitlines()
    assert "[" in lines[0] and "elapsed, about" in lines[0] and lines[0].startswith("run 1/2")
    assert lines[1].startswith("run 2/2") and "elapsed]" in lines[1]
    assert not [line for line in lines if "mlflow" in line.lower() and "tracking store" not in line]
