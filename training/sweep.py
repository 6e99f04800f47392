"""A sweep: one parent run in MLflow, one child run and registered version per grid point, here or on Dask."""

from __future__ import annotations

import logging
import time

from training import parallel
from training.artifact_store import check_artifact_store, translated
from training.config import METRICS, Settings, get_settings
from training.data import Dataset, load_dataset, split_dataset
from training.models import DEFAULT_FAMILY, GridPoint, make_grid
from training.runs import PointFailure, RunResult, ensure_registered_model, log_run, log_sweep_summary
from training.tracking import connect, ensure_experiment

logger = logging.getLogger(__name__)

DEFAULT_TEST_SIZE = 0.2
DEFAULT_RANDOM_STATE = 42


class SweepFailed(RuntimeError):
    """Some grid points failed; the others are logged and registered (entries: one per point, in grid order)."""

    def __init__(self, entries: list[RunResult | PointFailure]):
        self.entries = entries
        self.failures = [e for e in entries if isinstance(e, PointFailure)]
        self.results = [e for e in entries if isinstance(e, RunResult)]
        super().__init__(f"{len(self.failures)} of {len(entries)} grid points failed: "
                         + "; ".join(f"{f.params.describe()}: {f.reason}" for f in self.failures))


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
    """One child run per grid point under one parent run, every model registered; results in grid order."""
    # dataset: a table (load_table), else the bundled dataset_name. jobs: points at once in local
    # workers (0: one per core, 1: here); cluster: a Dask scheduler whose workers log to the
    # tracking server. In parallel a failed point stops no other: SweepFailed comes at the end.
    import mlflow

    settings = settings or get_settings()
    jobs = parallel.resolve_jobs(jobs, cluster=cluster)
    if cluster is not None:
        parallel.check_store_for_cluster(settings)
    grid = grid or make_grid([DEFAULT_FAMILY])
    dataset = dataset or load_dataset(dataset_name)
    split = split_dataset(dataset, test_size=test_size, random_state=random_state)
    connect(settings)
    with translated(tracking_uri=settings.tracking_uri):
        experiment_id = ensure_experiment(settings)
        location = mlflow.get_experiment(experiment_id).artifact_location
        # Before any run exists: a bucket we cannot write fails here, with nothing half-logged.
        check_artifact_store(location, tracking_uri=settings.tracking_uri)
    with translated(location=location, tracking_uri=settings.tracking_uri), \
            parallel.open_workers(jobs=min(jobs, len(grid)), cluster=cluster, settings=settings) as workers:
        mlflow.set_experiment(experiment_id=experiment_id)
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
                    entry.reason, format_progress(elapsed=elapsed, done=done, total=total))
        return
    logger.info(
        "run %d/%d  %s  %s  -> %s v%s  [%s]", done, total, entry.params.describe(),
        "  ".join(f"{k}={entry.metrics[k]:.4f}" for k in METRICS),
        settings.registered_model_name, entry.version,
        format_progress(elapsed=elapsed, done=done, total=total),
    )


def format_progress(*, elapsed: float, done: int, total: int) -> str:
    """`12 s elapsed, about 30 s left`: the runs so far predict the rest."""
    left = elapsed / done * (total - done)
    return f"{elapsed:.0f} s elapsed" + (f", about {left:.0f} s left" if done < total else "")
