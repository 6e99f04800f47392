"""The pure parts of bench.wide and the shared bench pieces it uses: bodies, medians, ratios, goals, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.report import missed_targets
from bench.rounds import Load, servers_of, summarise
from bench.servers import RunningServer, ServerSpec, request_body
from bench.wide import (
    BATCH,
    IRIS,
    MLFLOW,
    ONE,
    WIDE,
    check_targets,
    family_ratios,
    format_report,
    parse_args,
    table_rows,
    wide_training_args,
)
from data.make_accounts import ID_COLUMN, TARGET, make_accounts, write_table

pytestmark = pytest.mark.unit


def load_row(rps: float, rows: int = 1, *, errors: int = 0) -> dict:
    """One load's medians, as summarise writes them."""
    return {"rows": rows, "concurrency": 8, "rps": rps, "rows_per_s": rps * rows, "p50_ms": 0.8,
            "p99_ms": 2.5, "p99_worst_ms": 3.0, "errors": errors, "requests": 1000}


def family_result(*, iris: float, wide: float, ours_batch: float, mlflow_batch: float | None,
                  errors: int = 0) -> dict:
    """One family's result: req/s of one row / one record, and requests/s of 1000 records."""
    summary = {
        IRIS: {"cold_start_s": 9.0, "rss_mb": 200.0, "loads": {ONE.label: load_row(iris)}},
        WIDE: {"cold_start_s": 9.5, "rss_mb": 210.0,
               "loads": {ONE.label: load_row(wide, errors=errors),
                         BATCH.label: load_row(ours_batch, BATCH.rows)}},
    }
    if mlflow_batch is not None:
        summary[MLFLOW] = {"cold_start_s": 5.0, "rss_mb": 300.0,
                           "loads": {BATCH.label: load_row(mlflow_batch, BATCH.rows)}}
    return {"served_form": {IRIS: "linear", WIDE: "linear"}, "summary": summary, "training": {}}


def test_the_two_ratios_are_wide_over_iris_and_ours_over_mlflow():
    ratios = family_ratios(family_result(iris=10_000, wide=8_000, ours_batch=500,
                                         mlflow_batch=100)["summary"])
    assert ratios == pytest.approx({"one_record": 0.8, "batch": 5.0})


def test_the_goals_are_reported_per_family_but_only_errors_count():
    results = {"logistic_regression": family_result(iris=10_000, wide=8_000, ours_batch=500,
                                                    mlflow_batch=100),
               "random_forest": family_result(iris=5_000, wide=3_000, ours_batch=400, mlflow_batch=30)}
    targets = check_targets(results)
    verdicts = {item["target"]: item["passed"] for item in targets}
    assert verdicts == {
        "logistic_regression: 1000-record rows/s >= 10x mlflow serve": False,
        "logistic_regression: one-record req/s on wide >= 0.7x one-row on iris": True,
        "random_forest: 1000-record rows/s >= 10x mlflow serve": True,
        "random_forest: one-record req/s on wide >= 0.7x one-row on iris": False,
        "zero errors in every load": True,
    }
    assert [item.get("goal", False) for item in targets] == [True] * 4 + [False]
    assert missed_targets(targets) == 0


def test_errors_under_load_are_the_one_counted_failure():
    targets = check_targets({"hist_gradient_boosting": family_result(
        iris=5_000, wide=4_000, ours_batch=500, mlflow_batch=40, errors=3)})
    assert targets[-1]["values"] == [3.0] and targets[-1]["passed"] is False
    assert missed_targets(targets) == 1


def test_the_report_puts_the_families_side_by_side_then_the_goals():
    results = {"logistic_regression": family_result(iris=10_000, wide=8_000, ours_batch=500,
                                                    mlflow_batch=100)}
    report = format_report(results, check_targets(results))
    row = next(line for line in report.splitlines() if line.startswith("logistic_regression "))
    assert row.split() == ["logistic_regression", "linear", "10000", "8000", "0.80x", "0.80", "2.50",
                           "500000", "100000", "5.00x"]
    assert ("FAIL  logistic_regression: 1000-record rows/s >= 10x mlflow serve" in report
            and "measured: 5.00 (goal, informational: not in the result)" in report)
    assert report.splitlines()[-1] == "result: PASS (0 of 1 targets missed)"


def test_a_server_that_did_not_run_shows_as_not_measured():
    results = {"random_forest": family_result(iris=5_000, wide=3_000, ours_batch=400, mlflow_batch=None)}
    targets = check_targets(results)
    assert targets[0]["passed"] is None
    report = format_report(results, targets)
    row = next(line for line in report.splitlines() if line.startswith("random_forest "))
    assert row.split()[-2:] == ["-", "-x"]
    assert "n/a   random_forest: 1000-record rows/s" in report


def test_table_rows_give_the_features_with_none_for_missing_and_a_row_with_a_gap(tmp_path):
    table = tmp_path / "accounts.csv"
    write_table(make_accounts(300, seed=3), table)
    rows, columns, gap = table_rows(table, 100)
    assert len(rows) == 100 and ID_COLUMN not in columns and TARGET not in columns
    assert all(len(row) == len(columns) for row in rows)
    assert None in rows[gap] and all(None not in row for row in rows[:gap])
    assert not any(isinstance(value, float) and math.isnan(value) for row in rows for value in row)


def spec(name: str, body_format: str) -> ServerSpec:
    return ServerSpec(name, [], 1, "/ready", "/predict", body_format)


def test_bodies_name_the_columns_for_ours_and_mlflow_with_null_for_missing():
    rows, columns = [[1.5, None], [None, "yes"]], ["tenure", "plan"]
    assert json.loads(request_body(spec(WIDE, "records"), rows=rows, columns=columns)) == {
        "records": [{"tenure": 1.5, "plan": None}, {"tenure": None, "plan": "yes"}]}
    assert json.loads(request_body(spec(MLFLOW, "dataframe_split"), rows=rows, columns=columns)) == {
        "dataframe_split": {"columns": columns, "data": rows}}
    assert json.loads(request_body(spec(IRIS, "features"), rows=[[1.0, 2.0]], columns=columns)) == {
        "features": [[1.0, 2.0]]}


def test_a_plan_visits_each_server_once_and_the_summary_keeps_only_the_loads_it_ran():
    servers = [RunningServer(spec(name, "features"), None, Path(f"{name}.log"), 1.0)
               for name in (IRIS, WIDE, MLFLOW)]
    plan = [(ONE, servers[:2]), (BATCH, servers[1:])]
    assert servers_of(plan) == servers
    records = [{"server": server.spec.name, "load": load.label, "rps": rps, "p50_ms": 1.0,
                "p99_ms": 2.0, "errors": 0, "requests": 10, "rss_mb": 100.0}
               for load, group in plan for server in group for rps in (10.0, 30.0, 20.0)]
    summary = summarise(records, servers, [ONE, BATCH])
    assert list(summary[IRIS]["loads"]) == [ONE.label]
    assert list(summary[MLFLOW]["loads"]) == [BATCH.label]
    assert summary[WIDE]["loads"][BATCH.label]["rows_per_s"] == 20_000.0
    assert summary[WIDE]["loads"][ONE.label]["requests"] == 30


def test_options_train_the_bench_sweep_on_the_table_and_refuse_too_few_rows(tmp_path, capsys):
    assert wide_training_args(tmp_path / "t.csv", "random_forest") == [
        "--data", str(tmp_path / "t.csv"), "--target", "churned", "--drop", "account_id",
        "--model", "random_forest", "--param", "n_estimators=100"]
    assert parse_args([]).families == ["logistic_regression", "random_forest", "hist_gradient_boosting"]
    with pytest.raises(SystemExit):
        parse_args(["--rows", "500"])
    assert "--rows must be at least 2000" in capsys.readouterr().err
    assert Load(1000, 8).label == BATCH.label
