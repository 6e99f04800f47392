"""The sweep comparison page is drawn from the latest sweep and logged on its parent run."""

from __future__ import annotations

import mlflow
import pytest
from PIL import Image

from tests.conftest import lr_grid
from training.report import REPORT_ARTIFACT
from training.report import main as report_main
from training.sweep import run_experiments

pytestmark = pytest.mark.integration


def test_report_is_written_and_logged_on_the_latest_sweep(mlflow_store, tmp_path):
    run_experiments(dataset_name="iris", grid=lr_grid([1.0], ["l2"]))
    latest = run_experiments(dataset_name="wine", grid=lr_grid([0.1, 1.0], ["l1", "l2"]))
    output = tmp_path / "out" / REPORT_ARTIFACT
    assert report_main(["--output", str(output)]) == 0
    width, height = Image.open(output).size
    assert width > 800 and height > 600  # metric plots plus a row of four confusion matrices
    parent_id = mlflow.get_run(latest[0].run_id).data.tags["mlflow.parentRunId"]
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(parent_id, "report")]
    assert logged == [f"report/{REPORT_ARTIFACT}"]


def test_report_without_a_sweep_is_one_line(mlflow_store, capsys, tmp_path):
    assert report_main(["--output", str(tmp_path / "r.png")]) == 1
    assert capsys.readouterr().out.strip().startswith("error: no experiment")
