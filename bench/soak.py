"""Soak our BentoML service: a long run at high concurrency, then errors, latency and memory growth.

    python -m bench.soak [--duration 60] [--concurrency 64] [--keep]    # make soak

Prepares a model and starts `bentoml serve` exactly as bench.run does, warms it up, notes the RSS
of its process tree, runs hey for --duration while sampling that RSS every few seconds, then
prints total requests, errors (target: 0), p50/p99, and RSS at start and end (target: growth
under 10%). Writes JSON to bench/results/. Exit code: 0 targets met, 2 one missed, 1 could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from bench.load import LoadResult, ensure_hey, run_hey
from bench.report import (
    RESULTS_DIR,
    configure_cli,
    describe_machine,
    scratch_folder,
    warn_if_busy,
    without_nan,
)
from bench.run import ONE_ROW, iris_rows
from bench.servers import (
    BenchError,
    RunningServer,
    bench_env,
    make_spec,
    prepare_model,
    request_body,
    start_server,
    stop_server,
    tree_rss_mb,
)

logger = logging.getLogger(__name__)

MAX_GROWTH_PERCENT = 10.0


def soak(hey: str, server: RunningServer, *, body_file: Path, concurrency: int, seconds: float,
         sample_every: float) -> tuple[LoadResult, list[tuple[float, float]]]:
    """Run hey against server and sample its RSS meanwhile: (hey's result, [(t s, MiB), ...])."""
    url = server.spec.url + server.spec.predict_path
    started = time.monotonic()
    samples = [(0.0, tree_rss_mb(server.process.pid))]
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_hey, hey, url, body_file=body_file, concurrency=concurrency,
                             seconds=seconds)
        while not wait([future], timeout=sample_every).done:
            samples.append((time.monotonic() - started, tree_rss_mb(server.process.pid)))
        result = future.result()
    samples.append((time.monotonic() - started, tree_rss_mb(server.process.pid)))
    return result, samples


def format_soak(result: LoadResult, samples: list[tuple[float, float]], *, seconds: float,
                concurrency: int) -> tuple[str, bool]:
    """The printed figures and whether both targets were met."""
    start, end = samples[0][1], samples[-1][1]
    growth = 100 * (end - start) / start
    # Growth that stops (warm-up, pools filling) differs from a leak: a leak keeps growing late.
    middle = min(samples, key=lambda sample: abs(sample[0] - seconds / 2))[1]
    late_growth = 100 * (end - middle) / middle
    peak = max(rss for _, rss in samples)
    met_errors, met_growth = result.errors == 0, growth < MAX_GROWTH_PERCENT
    lines = [
        f"soak: {seconds:g} s at concurrency {concurrency} against our service",
        f"requests {result.requests} ({result.rps:.0f} req/s), errors {result.errors}"
        + (f" {result.statuses} {result.transport_errors}" if result.errors else ""),
        f"latency p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms",
        f"RSS start {start:.1f} MiB, end {end:.1f} MiB, peak {peak:.1f} MiB, growth {growth:+.1f}% "
        f"(second half alone: {late_growth:+.1f}%)",
        "RSS samples (s: MiB): " + ", ".join(f"{t:.0f}: {rss:.1f}" for t, rss in samples),
        f"{'PASS' if met_errors else 'FAIL'}  zero errors",
        f"{'PASS' if met_growth else 'FAIL'}  RSS growth < {MAX_GROWTH_PERCENT:g}%",
    ]
    return "\n".join(lines), met_errors and met_growth


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before the starting RSS is taken (10)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Prepare, start, warm up, soak, stop; print the figures and save them."""
    args = parse_args(argv)
    configure_cli()
    warn_if_busy()
    with scratch_folder("soak-", keep=args.keep) as workdir:
        server = None
        try:
            hey = ensure_hey()
            env = bench_env(workdir)
            training = prepare_model(env)
            server = start_server(make_spec("ours"), env=env, log_dir=workdir)
            body_file = workdir / "body.json"
            body_file.write_bytes(request_body(server.spec, rows=ONE_ROW, columns=iris_rows(1)[1]))
            # The first requests fill caches and pools: growth is measured from after them.
            run_hey(hey, server.spec.url + server.spec.predict_path, body_file=body_file,
                    concurrency=args.concurrency, seconds=args.warmup)
            result, samples = soak(hey, server, body_file=body_file, concurrency=args.concurrency,
                                   seconds=args.duration, sample_every=args.sample_every)
        except BenchError as error:
            logger.error("error: %s", error)
            return 1
        finally:
            if server is not None:
                stop_server(server.process)
    text, passed = format_soak(result, samples, seconds=args.duration, concurrency=args.concurrency)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / time.strftime("soak-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(without_nan(
        {"machine": describe_machine(), "config": vars(args), "training": training,
         "cold_start_s": server.cold_start_s, "result": result.to_dict(), "rss_samples": samples,
         "passed": passed}), indent=2, default=str))
    print(f"saved {path}")
    return 0 if passed else 2


if __name__ == "__main__":
    raise SystemExit(main())
