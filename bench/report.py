"""What every bench command shares around its measurements: targets, figures, the machine, the files."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

from bench.servers import REPO_ROOT
from training.cli import configure_logging as configure_cli_logging

logger = logging.getLogger(__name__)

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def number(value: float, digits: int) -> str:
    """value with digits decimals, or "-" when it was not measured."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def make_target(text: str, values: list[float], ok: Callable[[float], bool], note: str = "",
                *, goal: bool = False) -> dict:
    """One target: what it asks, the measured values, passed True/False (None: not measured).

    A goal (goal=True) is informational: it decides neither the result nor the exit code.
    """
    unmeasured = not values or any(math.isnan(v) for v in values)
    item = {"target": text, "values": values, "passed": None if unmeasured else all(map(ok, values))}
    if note:
        item["note"] = note
    return {**item, "goal": True} if goal else item


def missed_targets(targets: list[dict]) -> int:
    """How many targets failed; goals (informational) do not count."""
    return sum(item["passed"] is False for item in targets if not item.get("goal"))


def format_targets(targets: list[dict], *, width: int = 42) -> list[str]:
    """One PASS/FAIL/n/a line per target, then the result line (goals shown, not counted)."""
    width = max([width, *(len(item["target"]) for item in targets)])
    lines = []
    for item in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[item["passed"]]
        values = item.get("note") or ", ".join(number(v, 2) for v in item["values"]) or "-"
        goal = " (goal, informational: not in the result)" if item.get("goal") else ""
        lines.append(f"{verdict}  {item['target']:<{width}} measured: {values}{goal}")
    missed, counted = missed_targets(targets), sum(not item.get("goal") for item in targets)
    lines.append(f"result: {'FAIL' if missed else 'PASS'} ({missed} of {counted} targets missed)")
    return lines


def without_nan(value):
    """value with NaN floats as None: strict JSON readers (jq, browsers) reject NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nan(item) for item in value]
    return value


def results_stem(out: Path, name: str) -> Path:
    """out/<name>-<date>-<time>, out created: the JSON and PNG of one run are this plus a suffix."""
    out.mkdir(parents=True, exist_ok=True)
    return out / time.strftime(f"{name}-%Y%m%d-%H%M%S")


def write_json(path: Path, report: dict) -> None:
    """The report as strict JSON (NaN as null; paths and other objects as text)."""
    path.write_text(json.dumps(without_nan(report), indent=2, default=str))


def configure_cli() -> None:
    """Plain log lines on stdout; a SIGTERM (CI timeout, kill) unwinds so servers get stopped."""
    configure_cli_logging()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


@contextmanager
def scratch_folder(prefix: str, *, keep: bool) -> Iterator[Path]:
    """A temporary folder for the stores and logs of one run; removed afterwards unless keep."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if keep:
            logger.info("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def warn_if_busy() -> None:
    """Say so when other work already loads the machine: the figures will be noisy."""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus / 2:
        logger.warning("warning: load average %.1f on %d cores before starting: other work will "
                       "skew the figures", load, cpus)


def describe_machine() -> dict:
    """What the figures depend on: cores, versions, the commit benchmarked."""
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    return {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "platform": platform.platform(),
            "python": platform.python_version(), "commit": commit,
            **{name: version(name) for name in ("bentoml", "mlflow", "scikit-learn")}}
