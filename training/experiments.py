"""Train a grid of LogisticRegression runs, log them to MLflow and register each model.

    python -m training.experiments [--dataset iris] [--C 0.1 1 10] [--penalty l1 l2] [--promote]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from training.config import (
    DATASETS,
    FEATURE_STATS_ARTIFACT,
    METRICS,
    SCALER_ARTIFACT,
    SCHEMA_ARTIFACT,
    Settings,
    get_settings,
)
from training.data import DataValidationError, Dataset, Split, load_dataset, split_dataset
from training.train import (
    PENALTIES,
    SOLVER,
    HyperParams,
    compute_metrics,
    describe_features,
    fit_pipeline,
    plot_confusion_matrix,
    plot_metric_grid,
    report_classification,
)
from training.tracking import (
    TrackingUnavailable,
    configure_cli_logging,
    connect,
    ensure_experiment,
    one_line,
)

logger = logging.getLogger(__name__)

DEFAULT_C = (0.1, 1.0, 10.0)
DEFAULT_TEST_SIZE = 0.2
DEFAULT_RANDOM_STATE = 42


@dataclass(frozen=True)
class RunResult:
    """What one grid point produced."""

    params: HyperParams
    metrics: dict[str, float]
    run_id: str
    version: str


def make_grid(c_values: list[float], penalties: list[str]) -> list[HyperParams]:
    """Every combination of C and penalty, in a stable order."""
    return [HyperParams(C=c, penalty=p) for c, p in itertools.product(c_values, penalties)]


def run_experiments(
    *,
    dataset_name: str = "iris",
    grid: list[HyperParams] | None = None,
    test_size: float = DEFAULT_TEST_SIZE,
    random_state: int = DEFAULT_RANDOM_STATE,
    settings: Settings | None = None,
) -> list[RunResult]:
    """Train and log one child run per grid point under one parent run; register every model."""
    import mlflow

    settings = settings or get_settings()
    grid = grid or make_grid(list(DEFAULT_C), list(PENALTIES))
    dataset = load_dataset(dataset_name)
    split = split_dataset(dataset, test_size=test_size, random_state=random_state)
    connect(settings)
    mlflow.set_experiment(experiment_id=ensure_experiment(settings))

    results: list[RunResult] = []
    with mlflow.start_run(run_name=f"{dataset_name}-sweep") as parent:
        mlflow.set_tags({"dataset": dataset_name, "kind": "sweep"})
        mlflow.log_params({"dataset_name": dataset_name, "test_size": test_size,
                           "random_state": random_state, "grid_size": len(grid)})
        for index, params in enumerate(grid, start=1):
            result = log_run(params, dataset=dataset, split=split, test_size=test_size,
                             random_state=random_state, settings=settings)
            results.append(result)
            logger.info(
                "run %d/%d  C=%-5g penalty=%s  %s  -> %s v%s",
                index, len(grid), params.C, params.penalty,
                "  ".join(f"{k}={result.metrics[k]:.4f}" for k in METRICS),
                settings.registered_model_name, result.version,
            )
        log_sweep_summary(results)
        logger.info("sweep run %s in experiment %s", parent.info.run_id, settings.experiment_name)
    return results


def log_run(
    params: HyperParams,
    *,
    dataset: Dataset,
    split: Split,
    test_size: float,
    random_state: int,
    settings: Settings,
) -> RunResult:
    """Fit one pipeline and log its params, metrics, artifacts and registered model."""
    import mlflow

    run_name = f"{dataset.name}-C{params.C:g}-{params.penalty}"
    with mlflow.start_run(run_name=run_name, nested=True) as run:
        pipeline = fit_pipeline(params, split, feature_names=dataset.feature_names,
                                random_state=random_state)
        X_test = pd.DataFrame(split.X_test, columns=dataset.feature_names)
        y_pred = pipeline.predict(X_test)
        metrics = compute_metrics(split.y_test, y_pred)
        mlflow.log_params({
            "C": params.C, "penalty": params.penalty, "solver": SOLVER,
            "dataset_name": dataset.name, "test_size": test_size, "random_state": random_state,
            "n_train": len(split.y_train), "n_test": len(split.y_test),
        })
        mlflow.log_metrics(metrics)
        mlflow.set_tag("dataset", dataset.name)
        log_evaluation_artifacts(pipeline, X_test=X_test, y_true=split.y_test, y_pred=y_pred,
                                 dataset=dataset, split=split, title=run_name)
        version = log_and_register_model(pipeline, X_example=X_test.iloc[:2], metrics=metrics,
                                         params=params, dataset=dataset, settings=settings)
    return RunResult(params=params, metrics=metrics, run_id=run.info.run_id, version=version)


def log_evaluation_artifacts(
    pipeline,
    *,
    X_test: pd.DataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    dataset: Dataset,
    split: Split,
    title: str,
) -> None:
    """Confusion matrix, classification report, scaler, names and feature statistics."""
    import mlflow
    import skops.io

    figure = plot_confusion_matrix(y_true, y_pred, dataset.class_names, title=title)
    mlflow.log_figure(figure, "confusion_matrix.png")
    plt.close(figure)
    report_text, report_dict = report_classification(y_true, y_pred, dataset.class_names)
    mlflow.log_text(report_text, "classification_report.txt")
    mlflow.log_dict(report_dict, "classification_report.json")
    mlflow.log_dict({"feature_names": dataset.feature_names, "class_names": dataset.class_names},
                    SCHEMA_ARTIFACT)
    mlflow.log_dict(describe_features(split.X_train, dataset.feature_names), FEATURE_STATS_ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        scaler_path = Path(tmp) / Path(SCALER_ARTIFACT).name
        skops.io.dump(pipeline.named_steps["scaler"], scaler_path)
        mlflow.log_artifact(str(scaler_path), artifact_path=str(Path(SCALER_ARTIFACT).parent))


def log_and_register_model(
    pipeline,
    *,
    X_example: pd.DataFrame,
    metrics: dict[str, float],
    params: HyperParams,
    dataset: Dataset,
    settings: Settings,
) -> str:
    """Log the whole pipeline as the model, register it and describe the new version."""
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(X_example, pipeline.predict(X_example))
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=signature,
        input_example=X_example,
        # Given explicitly: inferring them costs seconds per run.
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        registered_model_name=settings.registered_model_name,
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.update_model_version(
        settings.registered_model_name, version,
        description=(f"LogisticRegression (C={params.C:g}, penalty={params.penalty}, "
                     f"solver={SOLVER}) with StandardScaler on {dataset.name}; "
                     f"macro F1 {metrics['f1']:.4f} on the held-out split."),
    )
    tags = {"dataset": dataset.name, "C": f"{params.C:g}", "penalty": params.penalty}
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


def format_table(results: list[RunResult]) -> str:
    """A fixed-width table of the sweep, one row per run."""
    header = f"{'version':>7}  {'C':>6}  {'penalty':<7}  " + "  ".join(f"{m:>9}" for m in METRICS)
    rows = [
        f"{r.version:>7}  {r.params.C:>6g}  {r.params.penalty:<7}  "
        + "  ".join(f"{r.metrics[m]:>9.4f}" for m in METRICS)
        for r in results
    ]
    return "\n".join([header, *rows])


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
    parser.add_argument("--dataset", choices=DATASETS, default="iris")
    parser.add_argument("--C", dest="c_values", type=_positive_float, nargs="+",
                        default=list(DEFAULT_C), metavar="C", help="inverse regularisation values")
    parser.add_argument("--penalty", dest="penalties", choices=PENALTIES, nargs="+",
                        default=list(PENALTIES))
    parser.add_argument("--test-size", type=_fraction, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--random-state", type=int, default=DEFAULT_RANDOM_STATE)
    parser.add_argument("--promote", action="store_true",
                        help="run `python -m training.promote` on the result")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    configure_cli_logging()
    settings = get_settings()
    started = time.perf_counter()
    try:
        results = run_experiments(
            dataset_name=args.dataset,
            grid=make_grid(args.c_values, args.penalties),
            test_size=args.test_size,
            random_state=args.random_state,
            settings=settings,
        )
    except (TrackingUnavailable, DataValidationError) as error:
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
    raise SystemExit(main())
