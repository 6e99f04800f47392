"""Train a sweep's grid points on Dask workers: a private LocalCluster (--jobs N) or a scheduler (--cluster)."""

# The driver creates each point's child run (SCHEDULED) in grid order and sends the data once; a
# worker resumes that run, fits, logs and registers. A task Dask retries on another worker after
# a death finds its run started (the worker tag) and gives up rather than register it twice; a
# failed point's run is marked FAILED and the others go on (README "Sweeps").

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import platform
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from serving.errors import one_line
from training.cli import CommandError
from training.config import METRICS, Settings
from training.data import Dataset, Split
from training.models import GridPoint
from training.runs import VERSION_TAG, PointFailure, RunResult, log_run, run_name_of
from training.tracking import connect

logger = logging.getLogger(__name__)

# Tag set on a child run by the worker that trains it: `host:pid`.
WORKER_TAG = "sweep.worker"
# Packages whose versions decide the numbers a point gives: a worker must have the driver's.
SAME_VERSIONS = ("scikit-learn", "numpy", "scipy", "pandas", "mlflow", "skops")
# Lost futures of Dask are CancelledError, which asyncio makes a BaseException.
_TASK_ERRORS = (Exception, asyncio.CancelledError, concurrent.futures.CancelledError)


class SweepConfigError(CommandError, ValueError):
    """The sweep cannot run as asked (e.g. a cluster with a SQLite store); nothing was logged."""


def available_cores() -> int:
    """The cores this process may run on (the affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_jobs(jobs: int, *, cluster: str | None) -> int:
    """`jobs` as a number of worker processes: 0 means one per core."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise SweepConfigError(f"jobs must be a whole number >= 0 (0: one per core), not {jobs!r}")
    if cluster is not None and jobs != 1:
        raise SweepConfigError("jobs and cluster do not go together: the cluster's workers decide "
                               "how many points run at once")
    return available_cores() if jobs == 0 else jobs


def check_store_for_cluster(settings: Settings) -> None:
    """A cluster's workers log themselves: they need a tracking server, not a file of this machine."""
    if not settings.is_remote:
        raise SweepConfigError(
            f"--cluster cannot log to {settings.tracking_uri}: workers on other machines cannot "
            "write a local store; use a tracking server (MLFLOW_TRACKING_URI=http://HOST:5000)")


def absolute_tracking_uri(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/relative.db: workers need not share our cwd."""
    if urlparse(uri).scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


@dataclass(frozen=True)
class SweepContext:
    """What every point of a sweep shares; sent to each worker once."""

    dataset: Dataset
    split: Split
    test_size: float
    random_state: int
    # Only what a worker needs: never the driver's whole Settings (API_KEY and the like).
    tracking_uri: str
    registered_model_name: str
    connect_timeout: float

    def settings(self) -> Settings:
        return Settings.model_construct(tracking_uri=self.tracking_uri,
                                        registered_model_name=self.registered_model_name,
                                        connect_timeout=self.connect_timeout)


@dataclass(frozen=True)
class PointTask:
    """One grid point and the child run, created by the driver, it is logged into."""

    index: int
    point: GridPoint
    run_id: str


class PointLost(RuntimeError):
    """The point's earlier attempt started on a worker that died."""


def _version_or_none(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# --- in the worker ------------------------------------------------------------------------


def train_point(task: PointTask, context: SweepContext) -> RunResult:
    """Train, log and register one grid point into its run; runs on a worker."""
    import mlflow

    settings = context.settings()
    quiet_worker()
    connect(settings)
    client = mlflow.MlflowClient()
    run = client.get_run(task.run_id)
    earlier = run.data.tags.get(WORKER_TAG)
    if earlier is not None:
        # Dask retries a task whose worker died. Training it again would log into a half-written
        # run and could register a second version: give up, unless it got to the end.
        registered = run.data.tags.get(VERSION_TAG)
        if run.info.status == "FINISHED" and registered:
            return RunResult(params=task.point, run_id=task.run_id, version=registered,
                             metrics={k: run.data.metrics[k] for k in METRICS})
        raise PointLost(f"its worker ({earlier}) died while training it")
    client.set_tag(task.run_id, WORKER_TAG, f"{socket.gethostname()}:{os.getpid()}")
    return log_run(task.point, dataset=context.dataset, split=context.split,
                   test_size=context.test_size, random_state=context.random_state,
                   settings=settings, run_id=task.run_id)


def worker_environment(tracking_uri: str, connect_timeout: float) -> dict[str, Any]:
    """What a worker has: package versions, and whether it reads the tracking store (opened here, once)."""
    import mlflow
    import mlflow.sklearn  # noqa: F401

    quiet_worker()
    versions = {name: _version_or_none(name) for name in SAME_VERSIONS}
    unreachable = None
    try:
        connect(Settings.model_construct(tracking_uri=tracking_uri, connect_timeout=connect_timeout))
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - reported to the driver as one line
        unreachable = f"cannot use the tracking store {tracking_uri}: {one_line(error)}"
    return {"python": platform.python_version_tuple()[:2], "versions": versions,
            "host": socket.gethostname(), "unreachable": unreachable}


# --- on the driver ------------------------------------------------------------------------


class Workers:
    """A Dask client with workers that can train points, as open_workers gives it."""

    def __init__(self, client, *, label: str):
        self.client = client
        self.label = label

    def describe(self) -> str:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(w.get("nthreads", 1) for w in workers.values())
        return f"{self.label}: {len(workers)} workers, {threads} threads"

    def check(self, settings: Settings) -> None:
        """Every worker has this project, the driver's package versions and the tracking store."""
        here = {"python": platform.python_version_tuple()[:2],
                "versions": {name: _version_or_none(name) for name in SAME_VERSIONS}}
        uri = absolute_tracking_uri(settings.tracking_uri)
        try:
            answers = self.client.run(worker_environment, uri, settings.connect_timeout)
        except Exception as error:  # noqa: BLE001 - e.g. `training` is not importable there
            raise SweepConfigError(
                f"the Dask workers cannot run this project's code ({one_line(error)}): install it "
                "there too (pip install -e . with the same pinned versions)") from error
        for address, there in sorted(answers.items()):
            if there["unreachable"]:
                raise SweepConfigError(f"Dask worker {address} on {there['host']}: {there['unreachable']}")
            if tuple(there["python"]) != tuple(here["python"]):
                raise SweepConfigError(
                    f"Dask worker {address} runs Python {'.'.join(there['python'])}, this machine "
                    f"{'.'.join(here['python'])}: results could differ")
            for name, wanted in here["versions"].items():
                if there["versions"].get(name) != wanted:
                    raise SweepConfigError(
                        f"Dask worker {address} has {name} {there['versions'].get(name)}, this "
                        f"machine {wanted}: install the same versions (results could differ)")

    def run(
        self,
        grid: list[GridPoint],
        *,
        parent_run_id: str,
        dataset: Dataset,
        split: Split,
        test_size: float,
        random_state: int,
        settings: Settings,
        on_done: Callable[[RunResult | PointFailure, int], None],
    ) -> list[RunResult | PointFailure]:
        """Train every point on the workers; one entry per point, in grid order."""
        import mlflow
        from distributed import as_completed

        client = mlflow.MlflowClient()
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        tasks: list[PointTask] = []
        entries: dict[int, RunResult | PointFailure] = {}
        futures = {}
        try:
            # Every child run first, in grid order: each point has its run before any worker starts.
            for index, point in enumerate(grid):
                tasks.append(PointTask(index=index, point=point, run_id=create_child_run(
                    client, experiment_id=experiment_id, parent_run_id=parent_run_id,
                    run_name=run_name_of(point, dataset.name))))
            context = SweepContext(
                dataset=dataset, split=split, test_size=test_size, random_state=random_state,
                # Local workers may write a SQLite store too: the same file, by absolute path.
                tracking_uri=absolute_tracking_uri(settings.tracking_uri),
                registered_model_name=settings.registered_model_name,
                connect_timeout=settings.connect_timeout)
            # Once to every worker, rather than once per point.
            [shared] = self.client.scatter([context], broadcast=True, hash=False)
            for task in tasks:
                future = self.client.submit(train_point, task, shared, pure=False,
                                            key=f"sweep-point-{task.index:04d}-{task.run_id}")
                futures[future] = task
            for future in as_completed(list(futures), loop=self.client.loop):
                task = futures[future]
                try:
                    entry = future.result()
                except _TASK_ERRORS as error:
                    entry = PointFailure(params=task.point, run_id=task.run_id, reason=describe_failure(error))
                    mark_failed(client, task.run_id)
                entries[task.index] = entry
                on_done(entry, len(entries))
        except BaseException:
            # The driver itself stops (Ctrl-C, lost scheduler): no run it owns stays RUNNING.
            self.client.cancel(list(futures))
            for task in tasks:
                if task.index not in entries:
                    mark_failed(client, task.run_id, status="KILLED")
            raise
        return [entries[task.index] for task in tasks]


def create_child_run(client, *, experiment_id: str, parent_run_id: str, run_name: str) -> str:
    """A child run of the sweep's parent, waiting (SCHEDULED) for a worker to train it."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags({MLFLOW_PARENT_RUN_ID: parent_run_id})  # user, source: as start_run does
    except Exception:  # noqa: BLE001 - an mlflow internal: the parent tag is what matters
        tags = {MLFLOW_PARENT_RUN_ID: parent_run_id}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id


def mark_failed(client, run_id: str, *, status: str = "FAILED") -> None:
    """End a run that did not finish as FAILED (or KILLED); a FINISHED run stays as it is."""
    try:
        if client.get_run(run_id).info.status != "FINISHED":
            client.set_terminated(run_id, status)
    except Exception as error:  # noqa: BLE001 - reported, and the sweep reports the point anyway
        logger.warning("could not mark run %s %s: %s", run_id, status, one_line(error))


def describe_failure(error: BaseException) -> str:
    """One line on why a point failed, worker deaths in plain words."""
    name = type(error).__name__
    if name == "KilledWorker":
        return "its worker died while training it (Dask gave up after retries)"
    if isinstance(error, (asyncio.CancelledError, concurrent.futures.CancelledError)):
        return f"lost: the scheduler cancelled it ({one_line(error)})"
    if isinstance(error, PointLost):
        return str(error)
    return f"{name}: {one_line(error)}"


def quiet_worker() -> None:
    """No "View run ... at" lines from workers (MLflow prints them on stdout for a server)."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


@contextmanager
def open_workers(*, jobs: int, cluster: str | None, settings: Settings) -> Iterator[Workers | None]:
    """None for a sequential sweep; else a checked Dask client, closed (its cluster too) on exit."""
    if cluster is None and jobs <= 1:
        yield None
        return
    import distributed
    import mlflow

    # Open (and, the first time, create) the store here before any worker does: several
    # processes creating a new SQLite store's tables at once would trip over each other.
    mlflow.MlflowClient().search_experiments(max_results=1)

    if cluster is not None:
        try:
            client = distributed.Client(cluster, timeout=settings.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise SweepConfigError(f"cannot reach the Dask scheduler {cluster}: {one_line(error)}") from error
        try:
            try:
                client.wait_for_workers(1, timeout=settings.connect_timeout)
            except (TimeoutError, asyncio.TimeoutError) as error:
                raise SweepConfigError(f"the Dask scheduler {cluster} has no workers") from error
            workers = Workers(client, label=f"cluster {cluster}")
            workers.check(settings)
            yield workers
        finally:
            client.close()
        return
    # Plain processes of this machine: no memory limit (Dask's default would restart a worker
    # past its share of the RAM), and Dask's own messages muted: the sweep reports what fails.
    # Scheduler, workers and the scheduler's HTTP endpoint listen on 127.0.0.1 only, free ports.
    cluster_here = distributed.LocalCluster(
        n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", memory_limit=0, silence_logs=logging.CRITICAL)
    try:
        with distributed.Client(cluster_here, set_as_default=False) as client:
            workers = Workers(client, label=f"{jobs} local processes")
            workers.check(settings)
            yield workers
    finally:
        cluster_here.close()
