"""Measure started servers: check their answers, drive them in interleaved rounds, take the medians."""

from __future__ import annotations

import json
import logging
import math
import statistics
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.load import run_hey
from bench.servers import BenchError, RunningServer, tree_rss_mb

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """One kind of traffic: rows per request and concurrent connections."""

    rows: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.rows == 1 else f"{self.rows} rows c={self.concurrency}"


# Which servers take which load: each load with the servers it is run against.
Plan = list[tuple[Load, list[RunningServer]]]
# One request body file per server name and rows per request.
Bodies = dict[tuple[str, int], Path]


def check_answers(servers: list[RunningServer], bodies: Bodies) -> None:
    """Every body of every server once before measuring: a server that answers errors is not benchmarked."""
    for server in servers:
        spec = server.spec
        for rows in sorted(rows for name, rows in bodies if name == spec.name):
            request = urllib.request.Request(spec.url + spec.predict_path, method="POST",
                                             data=bodies[spec.name, rows].read_bytes(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
            except OSError as error:
                raise BenchError(f"{spec.name}: {spec.predict_path} with {rows} rows failed: "
                                 f"{error}") from None
            if "predictions" not in answer:
                raise BenchError(f"{spec.name}: unexpected answer {str(answer)[:200]}")
            logger.info("%-8s answers %s", spec.name, json.dumps(answer["predictions"][0])[:100])


def servers_of(plan: Plan) -> list[RunningServer]:
    """Every server the plan names, once each, in the order they first appear."""
    servers: list[RunningServer] = []
    for _, group in plan:
        servers += [server for server in group if server not in servers]
    return servers


def run_rounds(hey: str, plan: Plan, *, bodies: Bodies, rounds: int, seconds: float,
               warmup: float) -> list[dict]:
    """Warm every server up, then every round runs every load against each of its servers once."""
    for server in servers_of(plan):
        for rows in sorted({load.rows for load, group in plan if server in group}):
            run_hey(hey, server.spec.url + server.spec.predict_path,
                    body_file=bodies[server.spec.name, rows], concurrency=8, seconds=warmup)
    records = []
    for round_index in range(rounds):
        for load, group in plan:
            # Rotate the order each round: no server always runs right after the same one.
            shift = round_index % len(group)
            for server in group[shift:] + group[:shift]:
                spec = server.spec
                result = run_hey(hey, spec.url + spec.predict_path,
                                 body_file=bodies[spec.name, load.rows],
                                 concurrency=load.concurrency, seconds=seconds)
                rss = tree_rss_mb(server.process.pid)
                records.append({"round": round_index + 1, "server": spec.name, "load": load.label,
                                "rows": load.rows, "concurrency": load.concurrency,
                                "rss_mb": rss, **result.to_dict()})
                logger.info("round %d  %-8s %-14s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  "
                            "errors %d  RSS %.0f MiB", round_index + 1, spec.name, load.label,
                            result.rps, result.p50_ms, result.p99_ms, result.errors, rss)
    return records


def median_of(values: list[float]) -> float:
    """The median of the measured values; NaN when none was (hey gives no p99 under 100 answers)."""
    measured = [v for v in values if not math.isnan(v)]
    return statistics.median(measured) if measured else math.nan


def summarise(records: list[dict], servers: list[RunningServer], loads: list[Load]) -> dict:
    """Per server: cold start, peak RSS, and per load it ran the median of the rounds (errors summed)."""
    summary = {}
    for server in servers:
        name = server.spec.name
        mine = [r for r in records if r["server"] == name]
        per_load = {}
        for load in loads:
            runs = [r for r in mine if r["load"] == load.label]
            if not runs:  # a load this server was not given
                continue
            per_load[load.label] = {
                "rows": load.rows, "concurrency": load.concurrency,
                "rps": median_of([r["rps"] for r in runs]),
                "rows_per_s": median_of([r["rps"] for r in runs]) * load.rows,
                "p50_ms": median_of([r["p50_ms"] for r in runs]),
                "p99_ms": median_of([r["p99_ms"] for r in runs]),
                "p99_worst_ms": max((r["p99_ms"] for r in runs if not math.isnan(r["p99_ms"])),
                                    default=math.nan),
                "errors": sum(r["errors"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
            }
        summary[name] = {"cold_start_s": server.cold_start_s,
                         "rss_mb": max(r["rss_mb"] for r in mine), "loads": per_load}
    return summary
