"""Promotion rule, alias/stage agreement and the no-regression gate on a real store."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.conftest import lr_grid
from training.experiments import run_experiments
from training.promote import main as promote_main
from training.promote import promote_best

pytestmark = pytest.mark.integration


def _registry_state(client, name):
    versions = client.search_model_versions(f"name = '{name}'")
    return {str(v.version): (v.current_stage, dict(v.tags), tuple(v.aliases)) for v in versions}


def _f1_by_version(client, name):
    return {str(v.version): client.get_run(v.run_id).data.metrics["f1"]
            for v in client.search_model_versions(f"name = '{name}'")}


def test_promote_picks_highest_f1_and_alias_agrees_with_stage(trained_store):
    name = trained_store.registered_model_name
    assert promote_main([]) == 0
    client = mlflow.MlflowClient()
    scores = _f1_by_version(client, name)
    best = max(scores.values())
    winner = client.get_model_version_by_alias(name, "production")
    assert scores[str(winner.version)] == best
    # Ties go to the earliest version.
    assert str(winner.version) == min((v for v, s in scores.items() if s == best), key=int)
    staged = [v for v in client.search_model_versions(f"name = '{name}'")
              if v.current_stage == "Production"]
    assert [str(v.version) for v in staged] == [str(winner.version)]
    assert winner.tags["promoted_metric"] == "f1"
    assert float(winner.tags["promoted_metric_value"]) == pytest.approx(best, abs=1e-6)
    assert winner.tags["previous_production_version"] == "none"
    assert "promoted_at" in winner.tags


def test_promote_on_another_metric_and_force_archives_previous(trained_store):
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "production", "1")
    client.transition_model_version_stage(name, "1", "Production")
    kept = promote_best(metric="accuracy")
    assert kept.promoted and kept.previous == "1"
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert client.get_model_version(name, kept.version).current_stage == "Production"


def test_later_worse_version_does_not_demote_production(mlflow_store):
    name = mlflow_store.registered_model_name
    run_experiments(dataset_name="iris", grid=lr_grid([10.0], ["l2"]))
    assert promote_best().version == "1"
    worse = run_experiments(dataset_name="iris", grid=lr_grid([0.01], ["l2"]))
    assert worse[0].metrics["f1"] < 1.0
    result = promote_best()
    assert not result.promoted and result.version == "1"
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(name, "production").version) == "1"
    assert client.get_model_version(name, "2").current_stage == "None"
    forced = promote_best(force=True)
    # --force replaces production with the best candidate, which is still version 1.
    assert forced.version == "1"


def test_min_score_above_best_exits_2_and_changes_nothing(trained_store, capsys):
    name = trained_store.registered_model_name
    assert promote_main([]) == 0
    client = mlflow.MlflowClient()
    before = _registry_state(client, name)
    assert promote_main(["--min-score", "1.01"]) == 3
    assert "below --min-score 1.01" in capsys.readouterr().out
    assert _registry_state(client, name) == before


def test_promote_with_no_versions_is_one_line_error(mlflow_store, capsys):
    assert promote_main([]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["error: no registered versions of ClassificationModel; "
                   "run `python -m training.experiments` first"]


@pytest.mark.parametrize("module", ["training.experiments", "training.promote"])
def test_unreachable_tracking_server_exits_1_with_one_line(module):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    proc = subprocess.run([sys.executable, "-m", module], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "unreachable" in lines[0] and "Traceback" not in lines[0]


def test_concurrent_promotions_leave_one_production_version(trained_store):
    """Two promotions racing: afterwards one version holds both alias and stage."""
    from concurrent.futures import ThreadPoolExecutor

    from training.promote import Candidate, apply_promotion

    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    run_ids = {str(v.version): v.run_id for v in client.search_model_versions(f"name = '{name}'")}
    for round_ in range(3):
        picks = [Candidate(version=v, run_id=run_ids[v], dataset="iris", score=1.0)
                 for v in (("2", "3") if round_ % 2 else ("4", "6"))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda c: apply_promotion(mlflow.MlflowClient(), name=name,
                                                    alias="production", best=c, metric="f1",
                                                    previous=None), picks))
        staged = [str(v.version) for v in client.search_model_versions(f"name = '{name}'")
                  if v.current_stage == "Production"]
        holder = str(client.get_model_version_by_alias(name, "production").version)
        assert staged == [holder], (round_, staged, holder)


def test_a_winner_with_another_schema_is_refused_unless_allowed(trained_store, capsys):
    promote_best()
    client = mlflow.MlflowClient()
    name = trained_store.registered_model_name
    held = client.get_model_version_by_alias(name, "production").version
    run_experiments(dataset_name="wine", grid=lr_grid([1.0], ["l2"]))  # the newest: wine
    capsys.readouterr()
    assert promote_main([]) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "other input columns" in lines[0] and "--allow-schema-change" in lines[0]
    assert client.get_model_version_by_alias(name, "production").version == held
    assert promote_main(["--allow-schema-change"]) == 0
    assert client.get_model_version_by_alias(name, "production").tags["dataset"] == "wine"


def test_a_dataset_without_versions_is_named_in_one_line(trained_store, capsys):
    assert promote_main(["--dataset", "breast_cancer"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["error: no version of ClassificationModel was trained on breast_cancer"]


def test_a_usage_error_is_exit_2_and_a_refusal_exit_3(trained_store):
    with pytest.raises(SystemExit) as usage:
        promote_main(["--min-score", "not-a-number"])
    assert usage.value.code == 2
    assert promote_main(["--min-score", "1.01"]) == 3
