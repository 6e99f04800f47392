"""Promotion rule, alias/stage agreement and the no-regression gate on a real store."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import mlflow
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.conftest import lr_grid
from training.promote import main as promote_main
from training.promote import promote_best
from training.sweep import run_experiments

pytestmark = pytest.mark.integration

# Only a guard against a deadlock in the race below: nothing is timed.
HANG_GUARD = 120


def _registry_state(client, name):
    versions = client.search_model_versions(f"name = '{name}'")
    return {str(v.version): (v.current_stage, dict(v.tags), tuple(v.aliases)) for v in versions}


def _scores(client, name, metric="f1"):
    return {str(v.version): client.get_run(v.run_id).data.metrics[metric]
            for v in client.search_model_versions(f"name = '{name}'")}


def _best(scores):
    """The version the rule picks: the highest score, the earliest version on a tie."""
    top = max(scores.values())
    return min((v for v, s in scores.items() if s == top), key=int)


def _production(client, name):
    """(alias holder, versions in stage Production)."""
    holder = str(client.get_model_version_by_alias(name, "production").version)
    staged = sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'")
                    if v.current_stage == "Production")
    return holder, staged


def _put_in_production(client, name, version):
    client.set_registered_model_alias(name, "production", version)
    client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)


def _set_metric(client, name, version, metric, value):
    """Give a version's run a new latest value of the metric (what promotion reads)."""
    client.log_metric(client.get_model_version(name, version).run_id, metric, value)


def _make_earliest_win_on_accuracy(client, name):
    """Version 1 ties the best accuracy (and so wins it, being earliest) but not the best f1."""
    first = min(_scores(client, name), key=int)
    _set_metric(client, name, first, "accuracy", max(_scores(client, name, "accuracy").values()))
    assert _best(_scores(client, name, "accuracy")) == first != _best(_scores(client, name, "f1"))
    return first


def _output_lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_promote_picks_highest_f1_and_alias_agrees_with_stage(trained_store):
    name = trained_store.registered_model_name
    assert promote_main([]) == 0
    client = mlflow.MlflowClient()
    scores = _scores(client, name)
    winner = client.get_model_version_by_alias(name, "production")
    assert scores[str(winner.version)] == max(scores.values())
    # Ties go to the earliest version.
    assert str(winner.version) == _best(scores)
    assert _production(client, name) == (str(winner.version), [str(winner.version)])
    assert winner.tags["promoted_metric"] == "f1"
    assert float(winner.tags["promoted_metric_value"]) == pytest.approx(max(scores.values()), abs=1e-6)
    assert winner.tags["previous_production_version"] == "none"
    assert "promoted_at" in winner.tags


def test_the_metric_option_ranks_by_that_metric(trained_store, capsys):
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    on_accuracy = _make_earliest_win_on_accuracy(client, name)
    assert promote_main(["--metric", "accuracy"]) == 0
    assert _production(client, name) == (on_accuracy, [on_accuracy])
    tags = client.get_model_version(name, on_accuracy).tags
    assert tags["promoted_metric"] == "accuracy"
    assert f"version {on_accuracy} (accuracy=" in _output_lines(capsys)[-1]


def test_production_that_ties_the_best_stays_and_the_command_says_so(trained_store, capsys):
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    scores = _scores(client, name)
    best = _best(scores)
    held = max(scores, key=int)  # the newest version, made to tie the best
    assert held != best
    _set_metric(client, name, held, "f1", scores[best])
    _put_in_production(client, name, held)
    before = _registry_state(client, name)
    capsys.readouterr()
    assert promote_main([]) == 0
    lines = _output_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"kept version {held} in production"), lines
    assert "--force" in lines[0]
    assert _registry_state(client, name) == before


def test_force_replaces_production_archives_it_and_records_it(trained_store, capsys):
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    scores = _scores(client, name)
    best = _best(scores)
    held = max(scores, key=int)
    assert held != best
    _set_metric(client, name, held, "f1", scores[best])  # production scores as well: kept without --force
    _put_in_production(client, name, held)
    capsys.readouterr()
    assert promote_main(["--force"]) == 0
    assert _output_lines(capsys)[-1].startswith(f"promoted {name} version {best} ")
    assert _production(client, name) == (best, [best])
    assert client.get_model_version(name, held).current_stage == "Archived"
    tags = client.get_model_version(name, best).tags
    assert tags["previous_production_version"] == held
    assert tags["promoted_metric"] == "f1"


def test_later_worse_version_does_not_demote_production(mlflow_store, capsys):
    name = mlflow_store.registered_model_name
    run_experiments(dataset_name="iris", grid=lr_grid([10.0], ["l2"]))
    assert promote_best().version == "1"
    worse = run_experiments(dataset_name="iris", grid=lr_grid([0.01], ["l2"]))
    assert worse[0].metrics["f1"] < 1.0
    client = mlflow.MlflowClient()
    before = _registry_state(client, name)
    capsys.readouterr()
    assert promote_main([]) == 0
    lines = _output_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("kept version 1 in production"), lines
    assert _registry_state(client, name) == before
    assert client.get_model_version(name, worse[0].version).current_stage == "None"


def _train_wine_after_iris():
    """One wine version, newer than the template's iris sweep; its version number."""
    (wine,) = run_experiments(dataset_name="wine", grid=lr_grid([1.0], ["l2"]))
    return str(wine.version)


def test_the_default_dataset_is_the_newest_versions(trained_store):
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    wine = _train_wine_after_iris()
    assert promote_main([]) == 0
    assert _production(client, name) == (wine, [wine])
    assert client.get_model_version(name, wine).tags["dataset"] == "wine"


def test_the_dataset_option_compares_that_datasets_versions_only(trained_store):
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    iris_scores = _scores(client, name)
    _train_wine_after_iris()
    assert promote_main(["--dataset", "iris"]) == 0
    best = _best(iris_scores)
    assert _production(client, name) == (best, [best])
    assert client.get_model_version(name, best).tags["dataset"] == "iris"


def test_only_versions_on_the_newest_data_of_the_dataset_compete(trained_store):
    """Versions trained on an older copy of the table (another sha256) are left out."""
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    scores = _scores(client, name)
    newest = max(scores, key=int)
    assert newest != _best(scores)
    for version in scores:
        if version != newest:
            client.set_model_version_tag(name, version, "data_sha256", "0" * 64)
    assert promote_main([]) == 0
    assert _production(client, name) == (newest, [newest])


def test_min_score_above_best_exits_3_and_changes_nothing(trained_store, capsys):
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


@pytest.mark.parametrize("first_writer", ["f1", "accuracy"])
def test_concurrent_promotions_leave_one_production_version(trained_store, monkeypatch, first_writer):
    """Two promotions with different winners, both past their choice before either writes the alias.

    The alias writes are ordered (first_writer's, then the other's) and the first promotion only
    moves the stage after the second has finished: the worst case for a promotion that would
    stage the version it chose rather than the one the alias ends up on.
    """
    name = trained_store.registered_model_name
    client = mlflow.MlflowClient()
    winners = {"f1": _best(_scores(client, name)), "accuracy": _make_earliest_win_on_accuracy(client, name)}
    second_writer = "accuracy" if first_writer == "f1" else "f1"

    both_chose = threading.Barrier(2, timeout=HANG_GUARD)
    first_wrote, second_done = threading.Event(), threading.Event()
    write_alias = mlflow.MlflowClient.set_registered_model_alias
    writes = []

    def ordered_write(self, model, alias, version):
        role = threading.current_thread().name
        if role not in {w[0] for w in writes}:
            both_chose.wait()  # both listed their candidates and chose; neither wrote yet
            if role == second_writer:
                assert first_wrote.wait(HANG_GUARD)
        writes.append((role, str(version)))
        write_alias(self, model, alias, version)
        if role == first_writer:
            first_wrote.set()
            assert second_done.wait(HANG_GUARD)  # the other promotion runs to its end meanwhile

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", ordered_write)
    results, errors = {}, {}

    def promote(metric):
        try:
            results[metric] = promote_best(metric=metric)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors[metric] = error
        finally:
            if metric == second_writer:
                second_done.set()

    threads = [threading.Thread(target=promote, args=(metric,), name=metric) for metric in ("f1", "accuracy")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    assert not errors, errors
    assert {m: (r.promoted, r.version, r.previous) for m, r in results.items()} == \
        {m: (True, winners[m], None) for m in ("f1", "accuracy")}
    assert writes == [(first_writer, winners[first_writer]), (second_writer, winners[second_writer])]
    # The last alias write wins, and the stage follows it.
    assert _production(client, name) == (winners[second_writer], [winners[second_writer]])


def test_a_winner_with_another_schema_is_refused_unless_allowed(trained_store, capsys):
    promote_best()
    client = mlflow.MlflowClient()
    name = trained_store.registered_model_name
    held = client.get_model_version_by_alias(name, "production").version
    _train_wine_after_iris()  # the newest: wine
    before = _registry_state(client, name)
    capsys.readouterr()
    assert promote_main([]) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "other input columns" in lines[0] and "--allow-schema-change" in lines[0]
    assert client.get_model_version_by_alias(name, "production").version == held
    assert _registry_state(client, name) == before
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
