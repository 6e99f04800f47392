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
import time
from pathlib import Path

import numpy as np

from training import promote
from training.cli import configure_logging, run_command
from training.config import DATASETS, get_settings
from training.data import Dataset, load_dataset, load_table
from training.models import DEFAULT_FAMILY, FAMILIES, make_grid, parse_param
from training.runs import format_table
from training.sweep import DEFAULT_RANDOM_STATE, DEFAULT_TEST_SIZE, SweepFailed, run_experiments

logger = logging.getLogger(__name__)


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


def train_sweep(args: argparse.Namespace) -> int:
    """Run the sweep the command line asks for and print its table; the exit code."""
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
        # Not one line: the table shows what did finish, then every failed point gets its line.
        logger.info("\n%s", format_table(error.entries))
        logger.error("error: %d of %d grid points failed (their runs are marked FAILED; the other %d "
                     "are registered):", len(error.failures), len(error.entries), len(error.results))
        for failure in error.failures:
            logger.error("  %s (run %s): %s", failure.params.describe(), failure.run_id, failure.reason)
        return 1
    logger.info("\n%s\n%d runs in %.1f s (tracking store: %s)", format_table(results),
                len(results), time.perf_counter() - started, settings.tracking_uri)
    return promote.main([]) if args.promote else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    configure_logging()
    return run_command(lambda: train_sweep(args), failure="training failed")


if __name__ == "__main__":
    raise SystemExit(main())
