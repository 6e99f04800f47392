"""Throughput through the load balancer (nginx, deploy/nginx) against one replica served directly.

    python -m bench.balancer [--duration 5] [--warmup 2] [--rounds 3] [--concurrency 16 64] [--keep]

In a temporary folder: train an iris sweep, promote, import (as `make bench` does), copy the
BentoML home for a second replica, start two `bentoml serve` replicas (1 worker each, the
service's setting) and nginx with deploy/nginx/nginx.conf as configure.sh prepares it, once in
front of both replicas and once in front of the first only. Then drive with `hey`, single-row
POST /predict, in interleaved rounds (each round visits every target and concurrency in a rotating
order), and print the medians side by side, with the CPU time each request cost the servers
(replicas + nginx) and hey, which is steadier than req/s on a shared machine:

  direct, 1 replica        hey -> replica A
  balancer, 1 replica      hey -> nginx -> A          (what the proxy hop itself costs)
  balancer, 2 replicas     hey -> nginx -> A, B

Everything shares this machine's cores with hey: on a machine with fewer cores than replicas +
nginx + hey need, a second replica cannot add throughput, and the proxy hop costs some. The
balancer is for availability here; throughput grows with replicas on separate cores or hosts.
This is a measurement, not a test: no target, exit code 0 unless it could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.load import LoadResult, ensure_hey, run_hey
from bench.report import configure_cli, scratch_folder, warn_if_busy
from bench.run import ONE_ROW, iris_rows
from bench.servers import (
    REPO_ROOT,
    BenchError,
    RunningServer,
    bench_env,
    free_port,
    log_tail,
    make_spec,
    prepare_model,
    request_body,
    start_server,
    stop_server,
    wait_for_http,
)

logger = logging.getLogger(__name__)

CONFIGURE = REPO_ROOT / "deploy" / "nginx" / "configure.sh"
TARGETS = ("direct, 1 replica", "balancer, 1 replica", "balancer, 2 replicas")


@dataclass(frozen=True)
class Balancer:
    url: str
    process: subprocess.Popen
    log: Path


def find_nginx() -> str:
    """The nginx binary (Debian puts it in /usr/sbin, not always on PATH), or BenchError."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None)
    if found is None:
        raise BenchError("nginx is missing: install it (Debian/Ubuntu: sudo apt-get install -y nginx) "
                         "and run again")
    return found


def start_balancer(nginx: str, run_dir: Path, upstreams: list[str]) -> Balancer:
    """nginx with the shipped config in front of upstreams, on a free 127.0.0.1 port."""
    port = free_port()
    env = {**os.environ, "UPSTREAMS": " ".join(upstreams), "LISTEN": f"127.0.0.1:{port}"}
    configured = subprocess.run(["sh", str(CONFIGURE), str(run_dir)], env=env, capture_output=True,
                                text=True)
    if configured.returncode != 0:
        raise BenchError(f"configure.sh exited {configured.returncode}: {configured.stderr.strip()[:300]}")
    log = run_dir / "nginx.log"
    with log.open("wb") as output:
        process = subprocess.Popen([nginx, "-p", f"{run_dir}/", "-c", str(run_dir / "nginx.conf"),
                                    "-e", "stderr"], stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", timeout=30, alive=lambda: process.poll() is None, log=log,
                      interval=0.05)
    except BaseException:
        stop_server(process)
        raise
    return Balancer(url, process, log)


def start_replica(env: dict[str, str], home: Path, log_dir: Path) -> RunningServer:
    log_dir.mkdir(parents=True, exist_ok=True)
    return start_server(make_spec("ours"), env={**env, "BENTOML_HOME": str(home)}, log_dir=log_dir)


def check_answer(url: str, body: bytes) -> None:
    """One request through url must be a 200 with a setosa prediction before we measure it."""
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if answer["predictions"][0]["label"] != "setosa":
        raise BenchError(f"{url} answered {answer}, not setosa")


@dataclass(frozen=True)
class Run:
    """One hey run and the CPU it cost: replicas and nginx together, and hey itself."""

    load: LoadResult
    server_cpu_s: float
    hey_cpu_s: float

    def per_request_us(self, seconds: float) -> float:
        return seconds / self.load.requests * 1e6 if self.load.requests else math.nan


def cpu_seconds(roots: list[int]) -> float:
    """User + system CPU of these processes and all their descendants so far."""
    total = 0.0
    for pid in roots:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def measured_run(hey: str, url: str, *, servers: list[int], body_file: Path, concurrency: int,
                 seconds: float) -> Run:
    server_before = cpu_seconds(servers)
    # hey is our only child that exits during the run: its CPU is the growth of RUSAGE_CHILDREN.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = run_hey(hey, url, body_file=body_file, concurrency=concurrency, seconds=seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    hey_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return Run(load, cpu_seconds(servers) - server_before, hey_cpu)


def run_rounds(hey: str, urls: dict[str, str], *, servers: list[int], body_file: Path,
               concurrencies: list[int], rounds: int, seconds: float,
               warmup: float) -> dict[tuple[str, int], list[Run]]:
    """Interleaved: each round runs every (target, concurrency), starting one further along."""
    for name, url in urls.items():
        run_hey(hey, url, body_file=body_file, concurrency=max(concurrencies), seconds=warmup)
    cells = [(name, c) for c in concurrencies for name in urls]
    results: dict[tuple[str, int], list[Run]] = {cell: [] for cell in cells}
    for number in range(rounds):
        shift = number % len(cells)
        for name, concurrency in cells[shift:] + cells[:shift]:
            run = measured_run(hey, urls[name], servers=servers, body_file=body_file,
                               concurrency=concurrency, seconds=seconds)
            result = run.load
            logger.info("round %d  %-22s c=%-3d %8.0f req/s  p50 %.1f ms  p99 %.1f ms  errors %d  "
                        "CPU/request: servers %.0f us, hey %.0f us", number + 1, name, concurrency,
                        result.rps, result.p50_ms, result.p99_ms, result.errors,
                        run.per_request_us(run.server_cpu_s), run.per_request_us(run.hey_cpu_s))
            results[(name, concurrency)].append(run)
    return results


def format_table(results: dict[tuple[str, int], list[Run]], concurrencies: list[int],
                 names: list[str]) -> str:
    def median(cell, key):
        return statistics.median(getattr(run.load, key) for run in results[cell])

    def cpu_us(name, key):
        return statistics.median(run.per_request_us(getattr(run, key))
                                 for c in concurrencies for run in results[(name, c)])

    head = "| target |" + "".join(f" c={c} req/s | c={c} p50 / p99 ms |" for c in concurrencies) + \
        " req/s vs direct | CPU us/request: replicas + nginx | hey | errors |"
    lines = [head, "|" + "---|" * (2 * len(concurrencies) + 5)]
    for name in names:
        cells = []
        ratios = []
        for c in concurrencies:
            rps = median((name, c), "rps")
            p50, p99 = median((name, c), "p50_ms"), median((name, c), "p99_ms")
            cells.append(f" {rps:,.0f} | {p50:.1f} / {p99:.1f} |")
            ratios.append(f"{rps / median((names[0], c), 'rps'):.2f}x")
        errors = sum(run.load.errors for c in concurrencies for run in results[(name, c)])
        lines.append(f"| {name} |" + "".join(cells) + f" {' / '.join(ratios)} | "
                     f"{cpu_us(name, 'server_cpu_s'):.0f} | {cpu_us(name, 'hey_cpu_s'):.0f} | {errors} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.balancer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per hey run (5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target (2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; the table shows medians (3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_cli()
    warn_if_busy()
    with scratch_folder("bench-balancer-", keep=args.keep) as workdir:
        processes: list[subprocess.Popen] = []
        balancers: list[Balancer] = []
        try:
            hey, nginx = ensure_hey(), find_nginx()
            env = bench_env(workdir)
            prepare_model(env)
            # Each replica on a home of its own: two servers on one home share, and wipe when
            # they start, one Prometheus multiprocess folder.
            home_a, home_b = Path(env["BENTOML_HOME"]), workdir / "bentoml-b"
            shutil.copytree(home_a, home_b, symlinks=True)
            replica_a = start_replica(env, home_a, workdir / "replica-a")
            processes.append(replica_a.process)
            replica_b = start_replica(env, home_b, workdir / "replica-b")
            processes.append(replica_b.process)
            addresses = [f"127.0.0.1:{r.spec.port}" for r in (replica_a, replica_b)]
            for run_dir, upstreams in (("lb-1", addresses[:1]), ("lb-2", addresses)):
                (workdir / run_dir).mkdir()
                balancers.append(start_balancer(nginx, workdir / run_dir, upstreams))
                processes.append(balancers[-1].process)
            urls = dict(zip(TARGETS, [replica_a.spec.url + "/predict", balancers[0].url + "/predict",
                                      balancers[1].url + "/predict"]))
            body_file = workdir / "body.json"
            body_file.write_bytes(request_body(replica_a.spec, rows=ONE_ROW, columns=iris_rows(1)[1]))
            for url in urls.values():
                check_answer(url, body_file.read_bytes())
            results = run_rounds(hey, urls, servers=[p.pid for p in processes], body_file=body_file,
                                 concurrencies=args.concurrency, rounds=args.rounds,
                                 seconds=args.duration, warmup=args.warmup)
        except BenchError as error:
            logger.error("error: %s", error)
            for balancer in balancers:
                logger.error("%s", log_tail(balancer.log, 10))
            return 1
        finally:
            for process in reversed(processes):
                stop_server(process)
    nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    print(f"\nsingle-row POST /predict, hey, {args.rounds} interleaved rounds of {args.duration:g} s "
          f"(medians); {os.cpu_count()} cores shared by the replicas, nginx "
          f"({nginx_version.split('/')[-1]}, worker_processes auto) and hey\n")
    print(format_table(results, args.concurrency, list(TARGETS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
