"""Parallel sweeps: `--jobs N` worker processes, and `--cluster` on a real Dask cluster.

Every mode must give the sequential sweep's metrics, grid point by grid point, with every child
run under one parent run and every model registered; a worker that dies fails its point only.
"""

from __future__ import annotations

import os

import distributed
import mlflow
import pytest

from training.config import METRICS, get_settings
from training.experiments import main as experiments_main
from training.models import make_grid
from training.sweep import run_experiments

pytestmark = pytest.mark.integration

# 12 points of three families, small enough to train in a moment on iris: 4 logistic regressions
# (C x penalty), 4 random forests (n_estimators x criterion), 4 gradient-boosted ensembles
# (learning_rate x l2_regularization). max_depth and max_leaf_nodes, which both tree families
# have, take one value each so that they multiply nothing.
OVERRIDES = {"C": (0.1, 1.0), "penalty": ("l1", "l2"), "n_estimators": (10, 20), "criterion": ("gini", "entropy"),
             "learning_rate": (0.1, 0.2), "l2_regularization": (0.0, 1.0), "max_depth": (3,), "max_leaf_nodes": (15,)}
FAMILIES = ["logistic_regression", "random_forest", "hist_gradient_boosting"]
GRID = make_grid(FAMILIES, OVERRIDES)
assert len(GRID) == 12
CLI_GRID = ["--model", *FAMILIES, *(f"--param={k}={','.join(str(v) for v in vs)}" for k, vs in OVERRIDES.items())]
LR_ARGS = ["--C", "0.1", "1", "--penalty", "l1", "l2"]  # the first 4 points of GRID


@pytest.fixture(scope="module")
def sequential_metrics(tmp_path_factory) -> dict[str, dict[str, float]]:
    """The 12 points trained one after the other (`--jobs 1`) in a store of their own."""
    from tests.conftest import use_store

    directory = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_store(monkeypatch, directory)
        results = run_experiments(dataset_name="iris", grid=GRID)
    get_settings.cache_clear()
    assert [r.params for r in results] == GRID
    return {r.params.describe(): r.metrics for r in results}


@pytest.fixture
def tracking_server(monkeypatch, tmp_path) -> str:
    """A real `mlflow server` on 127.0.0.1 with its own stores; the settings point at it."""
    from tests.servers import start_mlflow_server, stop_process_group

    process, url = start_mlflow_server(backend_store_uri=f"sqlite:///{tmp_path / 'server.db'}",
                                       artifacts=tmp_path / "artifacts", cwd=tmp_path,
                                       log=tmp_path / "server.log")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    get_settings.cache_clear()
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    yield url
    stop_process_group(process)


@pytest.fixture
def dask_cluster():
    """A real Dask cluster on loopback: a scheduler and two single-threaded worker processes."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def sweep_runs(settings) -> tuple[object, list]:
    """The experiment's one parent run and its child runs."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    return parents[0], children


def point_of(run) -> str:
    """The grid point a child run trained, as GridPoint.describe() words it."""
    return next(p.describe() for p in GRID if mlflow_run_name(p) == run.info.run_name)


def mlflow_run_name(point) -> str:
    from training.runs import run_name_of

    return run_name_of(point, "iris")


def assert_registered(settings, children) -> dict:
    """Every FINISHED child run has exactly one version; returns version by run id."""
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{settings.registered_model_name}'")
    finished = {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert sorted(v.run_id for v in versions) == sorted(finished)
    return {v.run_id: v.version for v in versions}


def table_points(output: str) -> list[str]:
    """The grid points of the final table, top to bottom."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("version  model"))
    rows = []
    for line in lines[start + 1:]:
        words = line.split()
        cells = words[-len(METRICS):]
        if len(words) < 2 + len(METRICS) or not all(c == "-" or c.replace(".", "").isdigit() for c in cells):
            break
        rows.append(" ".join(words[1:-len(METRICS)]))
    return rows


def test_jobs_2_gives_the_sequential_metrics_under_one_parent(mlflow_store, sequential_metrics, capsys):
    code = experiments_main([*LR_ARGS, "--jobs", "2"])
    output = capsys.readouterr().out
    assert code == 0, output
    parent, children = sweep_runs(mlflow_store)
    assert len(children) == 4
    assert all(r.info.status == "FINISHED" for r in children)
    assert assert_registered(mlflow_store, children).keys() == {r.info.run_id for r in children}
    for run in children:
        assert {k: run.data.metrics[k] for k in METRICS} == sequential_metrics[point_of(run)]
        # Logged by a worker process, not by this one.
        host, pid = run.data.tags["sweep.worker"].rsplit(":", 1)
        assert int(pid) != os.getpid()
    assert parent.info.status == "FINISHED"
    assert "2 local processes" in parent.data.tags["sweep.workers"]
    # The final table is in grid order, whatever order the points finished in.
    assert table_points(output) == [p.describe() for p in GRID[:4]]


def test_a_dask_cluster_and_a_tracking_server_give_the_sequential_metrics(
        tracking_server, dask_cluster, sequential_metrics, capsys):
    code = experiments_main([*CLI_GRID, "--cluster", dask_cluster.scheduler_address])
    output = capsys.readouterr().out
    assert code == 0, output
    settings = get_settings()
    parent, children = sweep_runs(settings)
    assert len(children) == 12
    assert all(r.info.status == "FINISHED" for r in children)
    versions = assert_registered(settings, children)
    assert len(versions) == 12
    assert {point_of(r): {k: r.data.metrics[k] for k in METRICS} for r in children} == sequential_metrics
    worker_pids = {int(r.data.tags["sweep.worker"].rsplit(":", 1)[1]) for r in children}
    assert os.getpid() not in worker_pids
    assert parent.info.status == "FINISHED"
    assert table_points(output) == [p.describe() for p in GRID]
    # The run's artifacts went through the server to its artifact store, model included.
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(children[0].info.run_id)}
    assert {"confusion_matrix.png", "schema.json"} <= artifacts


class DieBeforeRegistering(distributed.WorkerPlugin):
    """On every worker: training the point named exits the worker process, mid-run.

    Its run then has params, metrics and the logged model, but no registered version.
    """

    def __init__(self, point: str):
        self.point = point

    def setup(self, worker):
        from training import runs

        register = runs.log_and_register_model
        doomed = self.point

        def log_and_register_model(pipeline, *, point, **kwargs):
            if point.describe() == doomed:
                os._exit(13)
            return register(pipeline, point=point, **kwargs)

        runs.log_and_register_model = log_and_register_model


def test_a_worker_that_dies_fails_its_point_only(tracking_server, dask_cluster, sequential_metrics, capsys):
    doomed = GRID[5]  # a random forest, in the middle of the sweep
    with distributed.Client(dask_cluster) as client:
        client.register_plugin(DieBeforeRegistering(doomed.describe()), name="die-before-registering")
        code = experiments_main([*CLI_GRID, "--param", "l2_regularization=0", "--cluster",
                                 dask_cluster.scheduler_address])
    output = capsys.readouterr().out
    assert code == 1, output
    settings = get_settings()
    parent, children = sweep_runs(settings)
    assert len(children) == 10  # 4 + 4 + 2 with one l2_regularization
    failed = [r for r in children if r.info.status != "FINISHED"]
    assert [(point_of(r), r.info.status) for r in failed] == [(doomed.describe(), "FAILED")]
    # It died after logging its metrics, before registering: nothing of it is registered.
    assert set(METRICS) <= set(failed[0].data.metrics)
    versions = assert_registered(settings, children)
    assert len(versions) == 9
    for run in children:
        if run.info.status == "FINISHED":
            assert {k: run.data.metrics[k] for k in METRICS} == sequential_metrics[point_of(run)]
    assert parent.info.status == "FAILED"
    # The table shows every point in grid order, the failed one as FAILED; then which failed.
    rows = table_points(output)
    assert rows == [p.describe() for p in GRID if p.params.get("l2_regularization", 0) == 0]
    assert "1 of 10 grid points failed" in output
    assert f"  {doomed.describe()} (run {failed[0].info.run_id}): its worker" in output
    assert "died while training it" in output


def test_a_cluster_with_a_sqlite_store_is_refused_in_one_line(mlflow_store, capsys):
    from tests.conftest import free_port

    code = experiments_main([*LR_ARGS, "--cluster", f"tcp://127.0.0.1:{free_port()}"])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and "use a tracking server" in lines[0], lines
    assert mlflow.get_experiment_by_name(mlflow_store.experiment_name) is None
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.parametrize("argv", [["--jobs", "-1"], ["--jobs", "two"], ["--jobs", "2", "--cluster", "tcp://127.0.0.1:1"]])
def test_bad_jobs_or_cluster_is_a_usage_error(mlflow_store, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(argv)
    assert exit_info.value.code == 2
    assert "--jobs" in capsys.readouterr().err
