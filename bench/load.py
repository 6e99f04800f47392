"""Drive a server with `hey` and read its summary: requests, req/s, p50, p99 and errors."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.servers import BenchError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    """One hey run, as its text summary reports it (latencies have 0.1 ms resolution)."""

    requests: int  # answered plus failed
    rps: float  # 2xx answers per second: errors are not throughput
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus transport errors (refused, reset, timeout)
    statuses: dict[str, int]
    transport_errors: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def ensure_hey() -> str:
    """The path of `hey`; installed with apt-get when missing and we are root, else BenchError."""
    path = shutil.which("hey")
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError("the load generator `hey` is missing: install it (Debian/Ubuntu: "
                         "sudo apt-get install -y hey) and run again")
    logger.info("installing hey with apt-get")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    # A fresh machine may have no package lists yet: update once if the first try fails.
    if subprocess.run(["apt-get", "install", "-y", "hey"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "hey"], **quiet)
    path = shutil.which("hey")
    if not path:
        raise BenchError("`apt-get install -y hey` did not provide hey: install it and run again")
    return path


def run_hey(hey: str, url: str, *, body_file: Path, concurrency: int, seconds: float) -> LoadResult:
    """POST body_file to url from `concurrency` keep-alive connections for `seconds`."""
    argv = [hey, "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST",
            "-T", "application/json", "-D", str(body_file), url]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"hey exited {result.returncode}: {result.stderr.strip()[:300]}")
    return parse_hey(result.stdout)


def parse_hey(text: str) -> LoadResult:
    """Read hey's text summary; latencies are NaN when nothing was answered."""
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    if total is None:
        raise BenchError(f"cannot read hey's summary: {text.strip()[:300]}")
    percentiles = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", text)}
    statuses = {code: int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    transport: dict[str, int] = {}
    if "Error distribution:" in text:
        for count, message in re.findall(r"\[(\d+)\]\s+(.+)",
                                         text.split("Error distribution:", 1)[1]):
            transport[message.strip()] = int(count)
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    seconds = float(total.group(1))
    return LoadResult(
        requests=sum(statuses.values()) + sum(transport.values()),
        rps=ok / seconds if seconds > 0 else 0.0,
        p50_ms=percentiles.get(50, math.nan),
        p99_ms=percentiles.get(99, math.nan),
        errors=sum(statuses.values()) - ok + sum(transport.values()),
        statuses=statuses,
        transport_errors=transport,
    )
