"""Train a sweep of classifiers, log every run to MLflow and register each model.

    python -m training.experiments [--dataset iris] [--model logistic_regression ...] [--promote]
    python -m training.experiments --data table.csv --target label [--drop id] [--model ...]
    python -m training.experiments ... --jobs 4                   # 4 processes on this machine
    python -m training.experiments ... --cluster tcp://HOST:8786  # an existing Dask scheduler

Each family has a default grid (see training/models.py); `--param name=v1,v2` replaces the
values of one hyperparameter for every chosen family that has it. `--jobs N` trains N grid
points at once in worker processes (`--jobs 0`: one per core); `--cluster ADDRESS` sends them
to the workers of a Dask scheduler, which log to the tracking server themselves (a tracking
server is needed, not a SQLite file). Every mode gives the same metrics.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from serving.errors import one_line
from serving.schema import CATEGORY, NUMBER, Feature, TableSchema
from training.cli import configure_logging
from training.config import (
    DATASETS,
    EVALUATION_ROWS_ARTIFACT,
    FEATURE_STATS_ARTIFACT,
    METRICS,
    SCALER_ARTIFACT,
    SCHEMA_ARTIFACT,
    Settings,
    get_settings,
)
from training.data import DataValidationError, Dataset, Split, load_dataset, load_table, split_dataset
from training.models import (
    DEFAULT_FAMILY,
    FAMILIES,
    SOLVER,
    GridPoint,
    format_value,
    make_grid,
    parse_param,
)
from training.train import (
    compute_metrics,
    describe_features,
    fit_pipeline,
    plot_confusion_matrix,
    plot_metric_grid,
    report_classification,
)
from training.tracking import TrackingUnavailable, connect, ensure_experiment

logger = logging.getLogger(__name__)

DEFAULT_TEST_SIZE = 0.2
DEFAULT_RANDOM_STATE = 42


# Tag of a child run trained by a worker: the registered version, set before the run ends.
VERSION_TAG = "sweep.version"
# pyplot keeps global state: a worker with several threads draws one figure at a time.
_PYPLOT_LOCK = threading.Lock()


@dataclass(frozen=True)
class RunResult:
    """What one grid point produced."""

    params: GridPoint
    metrics: dict[str, float]
    run_id: str
    version: str


@dataclass(frozen=True)
class PointFailure:
    """A grid point of a parallel sweep that did not finish: its run is marked FAILED."""

    params: GridPoint
    run_id: str
    reason: str


class SweepFailed(RuntimeError):
    """Some grid points failed; the others are logged and registered.

    `entries` holds a RunResult or a PointFailure for every grid point, in grid order.
    """

    def __init__(self, entries: list[RunResult | PointFailure]):
        self.entries = entries
        self.failures = [e for e in entries if isinstance(e, PointFailure)]
        self.results = [e for e in entries if isinstance(e, RunResult)]
        super().__init__(f"{len(self.failures)} of {len(entries)} grid points failed: "
                         + "; ".join(f"{f.params.describe()}: {f.reason}" for f in self.failures))


class SweepConfigError(ValueError):
    """The sweep cannot run as asked (e.g. a cluster with a SQLite store); nothing was logged."""


def run_experiments(
    *,
    dataset_name: str = "iris",
    dataset: Dataset | None = None,
    grid: list[GridPoint] | None = None,
    test_size: float = DEFAULT_TEST_SIZE,
    random_state: int = DEFAULT_RANDOM_STATE,
    settings: Settings | None = None,
    jobs: int = 1,
    cluster: str | None = None,
) -> list[RunResult]:
    """Train and log one child run per grid point under one parent run; register every model.

    `dataset` is a table loaded with training.data.load_table; without it the bundled
    scikit-learn dataset `dataset_name` is used.

    `jobs`: grid points trained at once, each in a worker process of this machine (0: one per
    core; 1: one after the other in this process). `cluster`: the address of a Dask scheduler
    whose workers train the points and log them to the tracking server (which must then be a
    server, not a SQLite file). Whatever the mode, the results come back in grid order with the
    same metrics; in parallel modes a failed point does not stop the others, and SweepFailed is
    raised at the end (its run is marked FAILED).
    """
    import mlflow

    from training import parallel

    settings = settings or get_settings()
    jobs = parallel.resolve_jobs(jobs, cluster=cluster)
    if cluster is not None:
        parallel.check_store_for_cluster(settings)
    grid = grid or make_grid([DEFAULT_FAMILY])
    dataset = dataset or load_dataset(dataset_name)
    split = split_dataset(dataset, test_size=test_size, random_state=random_state)
    connect(settings)
    with parallel.open_workers(jobs=min(jobs, len(grid)), cluster=cluster, settings=settings) as workers:
        mlflow.set_experiment(experiment_id=ensure_experiment(settings))
        ensure_registered_model(settings.registered_model_name)
        started = time.perf_counter()
        with mlflow.start_run(run_name=f"{dataset.name}-sweep") as parent:
            mlflow.set_tags({"dataset": dataset.name, "data_sha256": dataset.sha256, "kind": "sweep"})
            mlflow.log_params({"dataset_name": dataset.name, "data_sha256": dataset.sha256,
                               "test_size": test_size, "random_state": random_state,
                               "grid_size": len(grid),
                               "models": ",".join(dict.fromkeys(p.model for p in grid))})
            if workers is None:
                entries: list[RunResult | PointFailure] = []
                for index, point in enumerate(grid, start=1):
                    result = log_run(point, dataset=dataset, split=split, test_size=test_size,
                                     random_state=random_state, settings=settings)
                    entries.append(result)
                    log_progress(result, done=index, total=len(grid), started=started,
                                 settings=settings)
            else:
                mlflow.set_tag("sweep.workers", workers.describe())
                entries = workers.run(
                    grid, parent_run_id=parent.info.run_id, dataset=dataset, split=split,
                    test_size=test_size, random_state=random_state, settings=settings,
                    on_done=lambda entry, done: log_progress(
                        entry, done=done, total=len(grid), started=started, settings=settings))
            results = [e for e in entries if isinstance(e, RunResult)]
            if results:
                log_sweep_summary(results)
            logger.info("sweep run %s in experiment %s", parent.info.run_id, settings.experiment_name)
            if len(results) < len(entries):
                # Raised inside the parent run: it ends FAILED, like each failed child.
                raise SweepFailed(entries)
    return results


def log_progress(entry: RunResult | PointFailure, *, done: int, total: int, started: float,
                 settings: Settings) -> None:
    """One line per finished grid point, in the order they finish."""
    elapsed = time.perf_counter() - started
    if isinstance(entry, PointFailure):
        logger.info("run %d/%d  %s  FAILED: %s  [%s]", done, total, entry.params.describe(),
                    entry.reason, progress(elapsed=elapsed, done=done, total=total))
        return
    logger.info(
        "run %d/%d  %s  %s  -> %s v%s  [%s]", done, total, entry.params.describe(),
        "  ".join(f"{k}={entry.metrics[k]:.4f}" for k in METRICS),
        settings.registered_model_name, entry.version,
        progress(elapsed=elapsed, done=done, total=total),
    )


def run_name_of(point: GridPoint, dataset_name: str) -> str:
    """`iris-logistic_regression-C1-penaltyl2`: the child run's name."""
    return "-".join([dataset_name, point.model, *(f"{k}{format_value(v)}" for k, v in point.params.items())])


def log_run(
    point: GridPoint,
    *,
    dataset: Dataset,
    split: Split,
    test_size: float,
    random_state: int,
    settings: Settings,
    run_id: str | None = None,
) -> RunResult:
    """Fit one pipeline and log its params, metrics, artifacts and registered model.

    Without `run_id`, a nested run of the active run is started; with it (a worker of a
    parallel sweep), that run, created by the driver under the sweep's parent, is resumed.
    """
    import mlflow

    run_name = run_name_of(point, dataset.name)
    run_context = (mlflow.start_run(run_id=run_id) if run_id is not None
                   else mlflow.start_run(run_name=run_name, nested=True))
    with run_context as run:
        pipeline = fit_pipeline(point, split, dataset=dataset, random_state=random_state)
        y_pred = pipeline.predict(split.X_test)
        metrics = compute_metrics(split.y_test, y_pred)
        params = {"model": point.model, **point.params}
        if point.model == "logistic_regression":
            params["solver"] = SOLVER
        mlflow.log_params({
            **params, "dataset_name": dataset.name, "data_sha256": dataset.sha256,
            "n_rows": len(dataset.y), "n_columns": dataset.X.shape[1],
            "test_size": test_size, "random_state": random_state,
            "n_train": len(split.y_train), "n_test": len(split.y_test),
        })
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"dataset": dataset.name, "data_sha256": dataset.sha256, "model": point.model})
        log_evaluation_artifacts(pipeline, y_pred=y_pred, dataset=dataset, split=split, title=run_name)
        version = log_and_register_model(pipeline, X_test=split.X_test, metrics=metrics,
                                         point=point, dataset=dataset, settings=settings)
        if run_id is not None:
            mlflow.set_tag(VERSION_TAG, version)
    return RunResult(params=point, metrics=metrics, run_id=run.info.run_id, version=version)


def progress(*, elapsed: float, done: int, total: int) -> str:
    """`12 s elapsed, about 30 s left`: the runs so far predict the rest."""
    left = elapsed / done * (total - done)
    return f"{elapsed:.0f} s elapsed" + (f", about {left:.0f} s left" if done < total else "")


def ensure_registered_model(name: str) -> None:
    """Create the registered model unless it exists (a concurrent sweep may create it first)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if "already exists" not in str(error).lower() and "ALREADY_EXISTS" not in error.error_code:
                raise


def table_schema(dataset: Dataset) -> TableSchema:
    """The typed columns the model takes, with the categories seen in training."""
    features = []
    for name in dataset.feature_names:
        if name in dataset.categorical_features:
            seen = sorted(str(v) for v in dataset.X[name].dropna().unique())
            features.append(Feature(name, CATEGORY, tuple(seen)))
        else:
            features.append(Feature(name, NUMBER))
    return TableSchema(features=tuple(features), class_names=tuple(dataset.class_names))


def evaluation_rows(X_test: pd.DataFrame) -> dict:
    """The held-out rows as JSON (missing values as null): the import checks served forms on them."""
    values = X_test.astype(object).where(pd.notna(X_test), None)
    return {"columns": list(X_test.columns), "data": values.to_numpy().tolist()}


def log_evaluation_artifacts(
    pipeline,
    *,
    y_pred: np.ndarray,
    dataset: Dataset,
    split: Split,
    title: str,
) -> None:
    """Confusion matrix, classification report, preprocessing, schema, statistics, evaluation rows."""
    import mlflow
    import skops.io

    with _PYPLOT_LOCK:
        figure = plot_confusion_matrix(split.y_test, y_pred, dataset.class_names, title=title)
        mlflow.log_figure(figure, "confusion_matrix.png")
        plt.close(figure)
    report_text, report_dict = report_classification(split.y_test, y_pred, dataset.class_names)
    mlflow.log_text(report_text, "classification_report.txt")
    mlflow.log_dict(report_dict, "classification_report.json")
    mlflow.log_dict(table_schema(dataset).to_dict(), SCHEMA_ARTIFACT)
    mlflow.log_dict(describe_features(split.X_train, dataset.numeric_features), FEATURE_STATS_ARTIFACT)
    mlflow.log_dict(evaluation_rows(split.X_test), EVALUATION_ROWS_ARTIFACT)
    # The fitted preprocessing (imputers, scaler, encoder) on its own, as before the scaler.
    with tempfile.TemporaryDirectory() as tmp:
        scaler_path = Path(tmp) / Path(SCALER_ARTIFACT).name
        skops.io.dump(pipeline.named_steps["preprocess"], scaler_path)
        mlflow.log_artifact(str(scaler_path), artifact_path=str(Path(SCALER_ARTIFACT).parent))


def log_and_register_model(
    pipeline,
    *,
    X_test: pd.DataFrame,
    metrics: dict[str, float],
    point: GridPoint,
    dataset: Dataset,
    settings: Settings,
) -> str:
    """Log the whole pipeline as the model, register it and describe the new version."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    complete = X_test.dropna()  # an example with every column filled shows each column's type
    X_example = (complete if len(complete) >= 2 else X_test).iloc[:2]
    signature = infer_signature(X_example, pipeline.predict(X_example))
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=signature,
        input_example=X_example,
        # Given explicitly: inferring them costs seconds per run.
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        # The types of the pipeline we just built (the one-hot encoder's dtype, for one):
        # whoever loads the model can then do so without trusting anything more.
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
    )
    # Registered through the client rather than log_model(registered_model_name=...), which
    # prints two lines per version to stderr that nothing can silence.
    client = mlflow.MlflowClient()
    version = str(client.create_model_version(
        settings.registered_model_name, source=info.model_uri, run_id=info.run_id,
        model_id=info.model_id).version)
    settings_text = ", ".join(f"{k}={format_value(v)}" for k, v in point.params.items())
    client.update_model_version(
        settings.registered_model_name, version,
        description=(f"{FAMILIES[point.model].label} ({settings_text}) with imputation, scaling and "
                     f"one-hot encoding on {dataset.name}; macro F1 {metrics['f1']:.4f} on the "
                     f"held-out split."),
    )
    tags = {"dataset": dataset.name, "data_sha256": dataset.sha256, "model": point.model}
    tags.update({k: format_value(v) for k, v in point.params.items()})
    tags.update({metric: f"{value:.6f}" for metric, value in metrics.items()})
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model_name, version, key, value)
    return version


def log_sweep_summary(results: list[RunResult]) -> None:
    """Log the comparison plot and table on the parent run."""
    import mlflow

    pairs = [(r.params, r.metrics) for r in results]
    for metric in ("f1", "accuracy"):
        figure = plot_metric_grid(pairs, metric=metric)
        mlflow.log_figure(figure, f"comparison_{metric}.png")
        plt.close(figure)
    mlflow.log_text(format_table(results), "comparison.txt")
    best = max(results, key=lambda r: r.metrics["f1"])
    mlflow.log_metrics({f"best_{k}": v for k, v in best.metrics.items()})


def format_table(entries: list[RunResult | PointFailure]) -> str:
    """A fixed-width table of the sweep, one row per grid point in the order given (grid order)."""
    width = max([len("model")] + [len(e.params.describe()) for e in entries])
    header = f"{'version':>7}  {'model':<{width}}  " + "  ".join(f"{m:>9}" for m in METRICS)
    rows = [
        f"{'FAILED':>7}  {e.params.describe():<{width}}  " + "  ".join(f"{'-':>9}" for _ in METRICS)
        if isinstance(e, PointFailure) else
        f"{e.version:>7}  {e.params.describe():<{width}}  "
        + "  ".join(f"{e.metrics[m]:>9.4f}" for m in METRICS)
        for e in entries
    ]
    return "\n".join([header, *rows])


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number >= 0 (0: one per core), not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"C must be a positive number, not {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"test size must be between 0 and 1, not {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=DATASETS, default=None,
                        help="a dataset bundled with scikit-learn (default: iris)")
    source.add_argument("--data", type=Path, default=None, metavar="PATH",
                        help="your own table: a .csv or .parquet file")
    parser.add_argument("--target", default=None, help="with --data: the column to predict")
    parser.add_argument("--drop", nargs="+", default=[], metavar="COLUMN",
                        help="with --data: columns not to train on (ids, free text)")
    parser.add_argument("--dataset-name", default=None, help="with --data: the data's name (default: the file's stem)")
    parser.add_argument("--model", dest="models", nargs="+", choices=list(FAMILIES),
                        default=[DEFAULT_FAMILY], help="model families to sweep (default: logistic_regression)")
    parser.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=V1,V2",
                        help="values to try for one hyperparameter (repeatable), e.g. n_estimators=100,300")
    parser.add_argument("--C", dest="c_values", type=_positive_float, nargs="+", default=None,
                        metavar="C", help="logistic_regression: inverse regularisation values (= --param C=...)")
    parser.add_argument("--penalty", dest="penalties", choices=("l1", "l2"), nargs="+", default=None,
                        help="logistic_regression: penalties (= --param penalty=...)")
    parser.add_argument("--test-size", type=_fraction, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--random-state", type=int, default=DEFAULT_RANDOM_STATE)
    parser.add_argument("--promote", action="store_true",
                        help="run `python -m training.promote` on the result")
    parser.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                        help="grid points trained at once in worker processes on this machine "
                             "(0: one per core; default 1: one after the other, in this process)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="send the grid points to this Dask scheduler (e.g. tcp://10.0.0.5:8786); "
                             "needs a tracking server (MLFLOW_TRACKING_URI=http://...)")
    args = parser.parse_args(argv)
    if args.cluster is not None and args.jobs != 1:
        parser.error("--jobs and --cluster do not go together: the cluster's workers decide how many run at once")
    if args.data is not None and not args.target:
        parser.error("--data needs --target COLUMN")
    if args.data is None and (args.target or args.drop or args.dataset_name):
        parser.error("--target, --drop and --dataset-name go with --data")
    try:
        overrides = dict(parse_param(text) for text in args.params)
        if args.c_values:
            overrides["C"] = tuple(args.c_values)
        if args.penalties:
            overrides["penalty"] = tuple(args.penalties)
        args.grid = make_grid(args.models, overrides)
    except ValueError as error:
        parser.error(str(error))
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    """The table the command line names; raises DataValidationError before anything is logged."""
    if args.data is not None:
        return load_table(args.data, target=args.target, drop=args.drop, name=args.dataset_name,
                          test_size=args.test_size)
    return load_dataset(args.dataset or "iris")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    configure_logging()
    settings = get_settings()
    started = time.perf_counter()
    try:
        results = run_experiments(
            dataset=load_data(args),
            grid=args.grid,
            test_size=args.test_size,
            random_state=args.random_state,
            settings=settings,
            jobs=args.jobs,
            cluster=args.cluster,
        )
    except SweepFailed as error:
        logger.info("\n%s", format_table(error.entries))
        logger.error("error: %d of %d grid points failed (their runs are marked FAILED; the other %d "
                     "are registered):", len(error.failures), len(error.entries), len(error.results))
        for failure in error.failures:
            logger.error("  %s (run %s): %s", failure.params.describe(), failure.run_id, failure.reason)
        return 1
    except (TrackingUnavailable, DataValidationError, SweepConfigError) as error:
        logger.error("error: %s", one_line(error))
        return 1
    except Exception as error:  # noqa: BLE001 - a CLI answers in one line, never a traceback
        logger.error("error: training failed: %s", one_line(error))
        return 1
    logger.info("\n%s\n%d runs in %.1f s (tracking store: %s)", format_table(results),
                len(results), time.perf_counter() - started, settings.tracking_uri)
    if args.promote:
        from training import promote

        return promote.main([])
    return 0


if __name__ == "__main__":
    # Run as training.experiments, not as __main__: the results that workers send back are
    # training.experiments' classes, and isinstance must recognise them.
    from training.experiments import main as _main

    raise SystemExit(_main())
