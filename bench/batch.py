"""Batch scoring bench: scripts/score.py (1 job, --jobs 2, a 2-worker Dask cluster) against `mlflow models predict`.

    python -m bench.batch [--rows 1000000] [--mlflow-rows N] [--train-rows 20000]
                          [--model FAMILY ...] [--keep]          # make bench-batch

In a temporary folder: write --rows rows of the wide table (data/make_accounts.py) as Parquet
(row groups of 100,000) and, for `mlflow models predict`, which reads only CSV or JSON, the same
rows' feature columns as CSV. For each family, train one grid point on a --train-rows sample
into a store of its own, promote and import it. Then run, one after the other, each alone on
the machine: score.py (1 job), score.py --jobs 2, score.py --cluster (a Dask scheduler and 2
single-threaded `dask worker` processes started beforehand, as an existing cluster is) and
`mlflow models predict -m models:/ClassificationModel/<version> --env-manager local` on the
same version. Wall clock includes start-up; start-up is the wall clock of the same command on a
1,000-row file, and rows/s "without start-up" is rows / (wall - start-up). Peak RSS: the
command's process tree (plus the 2 cluster workers for --cluster), polled every 50 ms.
Exit code: 0 every family >= 5x mlflow, 2 one is not, 1 the bench could not run.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.servers import REPO_ROOT, VENV_BIN, BenchError, bench_env, prepare_model
from data.make_accounts import ID_COLUMN, TARGET, make_accounts, write_table
from tests.processes import tree_rss_mb
from training.cli import configure_logging

logger = logging.getLogger(__name__)

GOAL = 5.0
STARTUP_ROWS = 1_000
ROW_GROUP = 100_000
# One grid point per family: the bench times scoring, not sweeps.
FAMILY_ARGS = {
    "logistic_regression": ["--C", "1", "--penalty", "l2"],
    "random_forest": ["--param", "n_estimators=100", "--param", "max_depth=8"],
    "hist_gradient_boosting": ["--param", "learning_rate=0.1", "--param", "max_leaf_nodes=31"],
}
MODES = ("1 job", "--jobs 2", "dask 2 workers", "mlflow predict")


@dataclass(frozen=True)
class Timing:
    """One mode of one family: rows, wall clock with and without start-up, peak RSS."""

    rows: int
    wall_s: float
    startup_s: float
    peak_mb: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s

    @property
    def rows_per_s_warm(self) -> float:
        return self.rows / max(self.wall_s - self.startup_s, 1e-9)


def run_measured(argv: list[str], *, env: dict[str, str], extra_pids: tuple[int, ...] = ()) -> tuple[float, float]:
    """Wall clock and peak RSS (MiB) of a command's process tree (and extra_pids'), or BenchError."""
    peak = [0.0]
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mb(process.pid) + sum(tree_rss_mb(pid) for pid in extra_pids))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    poller.join()
    if process.returncode != 0:
        tail = "\n".join(output.decode(errors="replace").splitlines()[-10:])
        raise BenchError(f"`{' '.join(argv[:6])} ...` exited {process.returncode}:\n{tail}")
    return seconds, peak[0]


def with_bytecode_cache(env: dict[str, str], cache: Path) -> dict[str, str]:
    """env where Python keeps compiled modules (in cache, not in the venv), as any installed Python does.

    Without it (PYTHONDONTWRITEBYTECODE=1, as some CI images set) every command compiles each module
    it imports at every start: seconds of start-up for both tools that no user's machine pays.
    """
    env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(cache)}


def startup_of(argv: list[str], *, env: dict[str, str]) -> float:
    """The command's wall clock on the 1,000-row file: the better of two runs (the first warms the disk cache)."""
    return min(run_measured(argv, env=env)[0] for _ in range(2))


def write_inputs(folder: Path, *, rows: int, mlflow_rows: int) -> dict[str, Path]:
    """The wide table as Parquet, and its feature columns as CSV for mlflow; small copies for start-up."""
    frame = make_accounts(rows, seed=2026)
    paths = {"parquet": folder / "accounts.parquet", "csv": folder / "accounts-mlflow.csv",
             "parquet_small": folder / "small.parquet", "csv_small": folder / "small-mlflow.csv"}
    write_table(frame, paths["parquet"], row_group_size=ROW_GROUP)
    write_table(frame.head(STARTUP_ROWS), paths["parquet_small"], row_group_size=ROW_GROUP)
    features = frame.drop(columns=[ID_COLUMN, TARGET])
    features.head(mlflow_rows).to_csv(paths["csv"], index=False)
    features.head(STARTUP_ROWS).to_csv(paths["csv_small"], index=False)
    return paths


def start_cluster(folder: Path, env: dict[str, str]) -> tuple[str, list[subprocess.Popen]]:
    """A Dask scheduler and 2 single-threaded workers on 127.0.0.1; its address and processes."""
    scheduler_file = folder / "scheduler.json"
    log = (folder / "dask.log").open("ab")
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    processes = [subprocess.Popen([str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                                  cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True)]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists():
        if time.monotonic() > deadline:
            raise BenchError("the Dask scheduler did not start within 60 s")
        time.sleep(0.1)
    for _ in range(2):
        processes.append(subprocess.Popen(
            [str(VENV_BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
             "--nworkers", "1", "--memory-limit", "0", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True))
    import json

    import distributed

    address = json.loads(scheduler_file.read_text())["address"]
    with distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return address, processes


def stop_all(processes: list[subprocess.Popen]) -> None:
    """Stop the cluster's processes (their own session each: the group goes with them)."""
    for process in reversed(processes):
        try:
            os.killpg(process.pid, 15)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def bench_family(family: str, folder: Path, paths: dict[str, Path], *, train: Path, rows: int,
                 mlflow_rows: int) -> dict[str, Timing]:
    """Train, promote and import one family in a store of its own; time every mode on it."""
    workdir = folder / family
    workdir.mkdir()
    env = with_bytecode_cache(bench_env(workdir), folder / "pycache")
    prepare_model(env, ["--data", str(train), "--target", TARGET, "--drop", ID_COLUMN, "--model", family,
                        *FAMILY_ARGS[family]])
    version = subprocess.run([sys.executable, "-c", ("import bentoml; print(bentoml.models.get("
                              "'classification_model:latest').info.labels['registered_version'])")],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
    score = [sys.executable, "scripts/score.py", "--keep", ID_COLUMN]
    out = workdir / "scored.parquet"
    results: dict[str, Timing] = {}
    address, cluster = start_cluster(workdir, env)
    pids = tuple(p.pid for p in cluster[1:])
    try:
        for mode, extra, extra_pids in (("1 job", [], ()), ("--jobs 2", ["--jobs", "2"], ()),
                                        ("dask 2 workers", ["--cluster", address], pids)):
            startup = startup_of([*score, *extra, "--input", str(paths["parquet_small"]), "--output", str(out)],
                                 env=env)
            wall, peak = run_measured([*score, *extra, "--input", str(paths["parquet"]), "--output", str(out)],
                                      env=env, extra_pids=extra_pids)
            results[mode] = Timing(rows, wall, startup, peak)
            logger.info("  %-15s %.1f s (start-up %.1f s), %.0f MiB", mode, wall, startup, peak)
    finally:
        stop_all(cluster)
    mlflow = [str(VENV_BIN / "mlflow"), "models", "predict", "-m", f"models:/ClassificationModel/{version}",
              "--content-type", "csv", "--env-manager", "local", "-o", str(workdir / "mlflow.json")]
    startup = startup_of([*mlflow, "-i", str(paths["csv_small"])], env=env)
    wall, peak = run_measured([*mlflow, "-i", str(paths["csv"])], env=env)
    results["mlflow predict"] = Timing(mlflow_rows, wall, startup, peak)
    logger.info("  %-15s %.1f s (start-up %.1f s), %.0f MiB", "mlflow predict", wall, startup, peak)
    return results


def format_table(results: dict[str, dict[str, Timing]]) -> tuple[str, bool]:
    """One table, every family and mode side by side; whether every family met the goal."""
    lines = [(f"{'family':24} {'mode':16} {'rows':>9} {'wall s':>7} {'start s':>7} {'rows/s':>9} "
              f"{'rows/s warm':>11} {'peak MiB':>8} {'vs mlflow':>9}")]
    passed = True
    for family, modes in results.items():
        reference = modes["mlflow predict"].rows_per_s
        for mode in MODES:
            t = modes[mode]
            ratio = t.rows_per_s / reference
            warm = f"{t.rows_per_s_warm:,.0f}" if t.wall_s > t.startup_s else "-"
            lines.append(f"{family:24} {mode:16} {t.rows:>9,} {t.wall_s:>7.1f} {t.startup_s:>7.1f} "
                         f"{t.rows_per_s:>9,.0f} {warm:>11} {t.peak_mb:>8.0f} {ratio:>8.1f}x")
        best = modes["1 job"].rows_per_s / reference
        verdict = "PASS" if best >= GOAL else "FAIL"
        passed &= best >= GOAL
        lines.append(f"{'':24} 1 job >= {GOAL:g}x mlflow models predict (wall, start-up included): "
                     f"{best:.1f}x {verdict}")
    return "\n".join(lines), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mlflow-rows", type=int, help="rows given to mlflow models predict (default: --rows)")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--model", nargs="+", default=list(FAMILY_ARGS), choices=list(FAMILY_ARGS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    configure_logging()
    mlflow_rows = min(args.mlflow_rows or args.rows, args.rows)
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        paths = write_inputs(folder, rows=args.rows, mlflow_rows=mlflow_rows)
        train = folder / "train.csv"
        write_table(make_accounts(args.train_rows), train)
        logger.info("%d rows (%.0f MiB Parquet) in %s; %s, %d cores", args.rows,
                    paths["parquet"].stat().st_size / 2**20, folder, sys.version.split()[0], psutil.cpu_count())
        results = {}
        for family in args.model:
            logger.info("%s:", family)
            results[family] = bench_family(family, folder, paths, train=train, rows=args.rows,
                                           mlflow_rows=mlflow_rows)
    except BenchError as error:
        logger.error("error: %s", error)
        return 1
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    table, passed = format_table(results)
    print(table)
    return 0 if passed else 2


if __name__ == "__main__":
    raise SystemExit(main())
