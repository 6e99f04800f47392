"""One grid point's run in MLflow: fit, log, register, with the serving schema and held-out rows the import checks."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from serving.schema import CATEGORY, NUMBER, Feature, TableSchema
from training.config import (EVALUATION_ROWS_ARTIFACT, FEATURE_STATS_ARTIFACT, METRICS, SCALER_ARTIFACT,
                             SCHEMA_ARTIFACT, Settings)
from training.data import Dataset, Split
from training.models import FAMILIES, SOLVER, GridPoint, format_value
from training.train import (
    compute_metrics,
    describe_features,
    fit_pipeline,
    plot_confusion_matrix,
    plot_metric_grid,
    report_classification,
)

# Tag of a child run trained by a worker: the registered version, set before the run ends.
VERSION_TAG = "sweep.version"
# pyplot keeps global state: a worker with several threads draws one figure at a time.
_PYPLOT_LOCK = threading.Lock()


# RunResult and PointFailure live in a module that is never __main__: Dask workers send them back
# pickled by module name, and the driver's isinstance checks must recognise them.
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
    """Fit one pipeline and log it all; in a nested run, or in run_id (a parallel worker's, made by the driver)."""
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
