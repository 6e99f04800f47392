"""--jobs N (local processes) and --cluster ADDRESS (a Dask scheduler): row groups scored on workers, merged in order."""

# Each task scores a run of the input's row groups into a part file (the writer settings of one
# process, one row group per chunk) in a folder beside the output; the parent copies the parts'
# row groups in order into the output, so the file is byte-identical to a single process's. Dask
# retries a task whose worker died; the retry finds the task's start mark and gives up, which
# fails the job: a death is reported, never papered over. Workers read the input, the model and
# the parts' folder by the parent's paths: a cluster needs them on a shared file system.

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.chunks import Job, ModelFiles, open_model, score_chunks
from batch.errors import BadRow, ClusterUnavailable, WorkerDied
from batch.tables import open_writer
from serving.errors import one_line
from serving.model import LoadedModel
from training.cli import CommandError

# Test hook: BATCH_HOLD=<dir> holds the first task on its worker (<dir>/holding-<pid>) until
# <dir>/release exists, so that a test can kill that worker mid-job.
HOLD_ENV = "BATCH_HOLD"
_LOST = (asyncio.CancelledError, concurrent.futures.CancelledError)
_models: dict[str, LoadedModel] = {}  # per worker process: each model is loaded once, not once per task


@dataclass(frozen=True)
class PartTask:
    """A run of row groups, the data row number of its first row, and its part file."""

    index: int
    row_groups: tuple[int, ...]
    first_row: int
    rows: int
    part: str


class PartLost(RuntimeError):
    """The task started before on a worker that died."""


def plan_parts(row_groups: tuple[int, ...], folder: Path) -> list[PartTask]:
    """One task per row group, in file order: the finest split that keeps every chunk as one process reads it."""
    tasks, first = [], 1
    for index, rows in enumerate(row_groups):
        tasks.append(PartTask(index, (index,), first, rows, str(folder / f"part-{index:06d}.parquet")))
        first += rows
    return tasks


def model_of(files: ModelFiles) -> LoadedModel:
    """The worker's loaded model, loaded at its first task."""
    key = f"{files.path}|{files.metadata.get('sha256')}"
    if key not in _models:
        _models[key] = open_model(files)
    return _models[key]


def hold_first_task(task: PartTask) -> None:
    """Test hook: with BATCH_HOLD=<dir>, the first task waits for <dir>/release (a poll, not a timer)."""
    directory = os.environ.get(HOLD_ENV)
    if not directory or task.index != 0:
        return
    (Path(directory) / f"holding-{os.getpid()}").touch()
    while not (Path(directory) / "release").exists():
        time.sleep(0.05)


def score_part(task: PartTask, job: Job) -> list[pa.Table]:
    """Score one task's row groups into its part file (runs on a worker); the refused rows."""
    mark = Path(task.part + ".started")
    if mark.exists():
        raise PartLost(f"the worker scoring rows {task.first_row}-{task.first_row + task.rows - 1} died")
    mark.touch()
    hold_first_task(task)
    model = model_of(job.model)
    with open_writer(Path(task.part), job.schema) as writer:
        return score_chunks(job, model, writer, first_row=task.first_row, row_groups=list(task.row_groups))


def run_parts(client, tasks: list[PartTask], job: Job, *, on_part: Callable[[int], None]) -> list[list[pa.Table]]:
    """Every task on the cluster; their refused rows in task order, or the first failure as a CommandError."""
    from distributed import as_completed

    [shared] = client.scatter([job], broadcast=True, hash=False)
    futures = {client.submit(score_part, task, shared, pure=False, key=f"batch-part-{task.index:06d}-{id(job)}"): task
               for task in tasks}
    results: dict[int, list[pa.Table]] = {}
    bad_rows: dict[int, BadRow] = {}
    try:
        for future in as_completed(list(futures), loop=client.loop):
            task = futures[future]
            try:
                results[task.index] = future.result()
                on_part(task.rows)
            except BadRow as error:
                # The earliest bad row is wanted: later parts need not run, earlier ones must finish.
                bad_rows[task.index] = error
                client.cancel([f for f, t in futures.items() if t.index > task.index])
            except _LOST:
                if not any(index < task.index for index in bad_rows):
                    raise WorkerDied(f"the Dask scheduler lost the part of rows from {task.first_row}") from None
            except Exception as error:  # noqa: BLE001 - each in one line, deaths in plain words
                raise failure_of(error, task) from None
    except BaseException:
        client.cancel(list(futures))
        raise
    if bad_rows:
        raise bad_rows[min(bad_rows)]
    return [results[task.index] for task in tasks]


def failure_of(error: BaseException, task: PartTask) -> CommandError:
    """A task's failure as the job's one line."""
    rows = f"rows {task.first_row}-{task.first_row + task.rows - 1}"
    if isinstance(error, CommandError):
        return error
    if isinstance(error, PartLost):
        return WorkerDied(f"{error}; the job stops (no output written)")
    if type(error).__name__ == "KilledWorker":
        return WorkerDied(f"the worker scoring {rows} died (Dask gave up after retries); no output written")
    return CommandError(f"a worker failed scoring {rows}: {type(error).__name__}: {one_line(error)}")


def merge_parts(tasks: list[PartTask], writer: pq.ParquetWriter) -> None:
    """Copy the parts' row groups, in order, into the output (the same writer settings: the same bytes)."""
    for task in tasks:
        part = pq.ParquetFile(task.part)
        for group in range(part.num_row_groups):
            table = part.read_row_group(group)
            writer.write_table(table, row_group_size=max(table.num_rows, 1))


class Cluster:
    """A Dask client: on a private LocalCluster of N processes, or on a scheduler's workers."""

    def __init__(self, *, jobs: int, address: str | None, timeout: float = 30.0) -> None:
        self.jobs, self.address, self.timeout = jobs, address, timeout
        self.client = self.local = None

    def __enter__(self):
        import distributed

        # The command logs INFO lines on stdout; Dask's own (scheduler closing...) are not the job's.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.address is None:
            # Plain processes of this machine, listening on 127.0.0.1; no memory limit (Dask would
            # restart a worker past its share of RAM) and Dask's own messages muted.
            self.local = distributed.LocalCluster(
                n_workers=self.jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", memory_limit=0, silence_logs=logging.CRITICAL)
            self.client = distributed.Client(self.local, set_as_default=False)
            return self.client
        try:
            self.client = distributed.Client(self.address, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterUnavailable(f"cannot reach the Dask scheduler {self.address}: {one_line(error)}") from None
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except TimeoutError:
            self.client.close()
            raise ClusterUnavailable(f"the Dask scheduler {self.address} has no workers") from None
        return self.client

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.local is not None:
            self.local.close()
