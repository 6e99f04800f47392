"""How much a parallel sweep gains: the same 24-point sweep sequential, `--jobs N` and on a Dask cluster.

    .venv/bin/python -m bench.sweep [--dataset breast_cancer] [--workers 2] [--rounds 1]

The grid has three families: 6 logistic regressions (the default grid), 8 random forests
(n_estimators 50, 100, 200, 300 x max_depth None, 8) and 10 histogram gradient boostings
(learning_rate 0.02 ... 0.3 x max_leaf_nodes 15, 31). Every mode logs to the same real
`mlflow server` on 127.0.0.1 (a SQLite store and artifacts in a temporary folder), each into an
experiment of its own, so that only the way the points are trained differs:

- sequential: `run_experiments()` as `--jobs 1` does, one point after the other in this process;
- jobs N: `--jobs N`, which starts N worker processes for the sweep (counted in its time);
- cluster N: `--cluster ADDRESS` on a `distributed.LocalCluster` of N single-threaded worker
  processes started beforehand (an existing cluster: its start is printed, not counted).

Prints the wall time of each mode, its speed-up over sequential, and whether every grid point
got the same metrics as sequentially. A benchmark, not a test: nothing fails on slowness.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.servers import start_mlflow_server, stop_server

GRID_ARGS = {
    "models": ["logistic_regression", "random_forest", "hist_gradient_boosting"],
    "params": ["n_estimators=50,100,200,300", "learning_rate=0.02,0.05,0.1,0.2,0.3"],
}


def start_tracking_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on a free 127.0.0.1 port with its stores inside workdir."""
    return start_mlflow_server(backend_store_uri=f"sqlite:///{workdir / 'server.db'}",
                               artifacts=workdir / "artifacts", cwd=workdir,
                               log=workdir / "mlflow-server.log")


def timed_sweep(*, label: str, url: str, dataset: str, grid, jobs: int = 1,
                cluster: str | None = None) -> tuple[float, dict[str, dict[str, float]]]:
    """Wall seconds of one sweep into an experiment of its own, and its metrics by grid point."""
    from training.config import get_settings
    from training.sweep import run_experiments

    os.environ["MLFLOW_TRACKING_URI"] = url
    os.environ["MLFLOW_EXPERIMENT_NAME"] = f"bench-sweep-{label}"
    get_settings.cache_clear()
    started = time.perf_counter()
    results = run_experiments(dataset_name=dataset, grid=grid, jobs=jobs, cluster=cluster)
    elapsed = time.perf_counter() - started
    return elapsed, {r.params.describe(): r.metrics for r in results}


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="breast_cancer", choices=("iris", "wine", "breast_cancer"))
    parser.add_argument("--workers", type=int, default=2, help="processes for --jobs and the cluster")
    parser.add_argument("--rounds", type=int, default=1, help="sweeps per mode, interleaved; medians shown")
    args = parser.parse_args(argv)

    import distributed

    from training.cli import configure_logging as configure_cli_logging
    from training.models import make_grid, parse_param
    from training.parallel import available_cores

    configure_cli_logging()
    logging.getLogger("training.sweep").setLevel(logging.WARNING)  # no line per point
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    grid = make_grid(GRID_ARGS["models"], dict(parse_param(p) for p in GRID_ARGS["params"]))
    counts = {m: sum(p.model == m for p in grid) for m in GRID_ARGS["models"]}
    print(f"{len(grid)} grid points ({', '.join(f'{m} {n}' for m, n in counts.items())}) on "
          f"{args.dataset}; {available_cores()} cores; load average at start {load_average()}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    server, url = start_tracking_server(workdir)
    timings: dict[str, list[float]] = {}
    metrics: dict[str, dict] = {}
    try:
        started = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                           silence_logs=logging.CRITICAL)
        cluster_start = time.perf_counter() - started
        modes = [("sequential", {}), (f"--jobs {args.workers}", {"jobs": args.workers}),
                 (f"--cluster ({args.workers} workers)", {"cluster": cluster.scheduler_address})]
        try:
            for round_index in range(args.rounds):
                for label, kwargs in modes:
                    slug = f"{label.split()[0].strip('-')}-{round_index}"
                    elapsed, got = timed_sweep(label=slug, url=url, dataset=args.dataset, grid=grid, **kwargs)
                    timings.setdefault(label, []).append(elapsed)
                    metrics.setdefault(label, got)
                    print(f"  round {round_index + 1}: {label:<24} {elapsed:6.1f} s", flush=True)
        finally:
            cluster.close()
    finally:
        stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)

    import statistics

    baseline = statistics.median(timings["sequential"])
    reference = metrics["sequential"]
    print()
    print("| mode | wall time | per point | speed-up vs sequential | same metrics as sequential |")
    print("|---|---|---|---|---|")
    for label, _ in modes:
        wall = statistics.median(timings[label])
        same = "yes" if metrics[label] == reference else "NO"
        print(f"| {label} | {wall:.1f} s | {wall / len(grid):.2f} s | {baseline / wall:.2f}x | {same} |")
    print(f"\nLocalCluster start (not counted above): {cluster_start:.1f} s; load average at the end "
          f"{load_average()} (1 / 5 / 15 min)")
    return 0 if all(metrics[label] == reference for label, _ in modes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
