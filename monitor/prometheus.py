"""Prometheus without containers: the shipped config and rules against local replicas (python -m monitor.prometheus)."""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from pathlib import Path

import yaml

from training.cli import CommandError, configure_logging, run_command

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
CONFIG_FILE = DEPLOY / "prometheus.yml"
RULES_FILE = DEPLOY / "alerts.yml"
JOB = "classifier"


def find_prometheus() -> str | None:
    """The prometheus binary on PATH (Debian's package puts it in /usr/bin), or None."""
    return shutil.which("prometheus")


def local_config(targets: list[str], *, scrape_interval: str | None = None,
                 evaluation_interval: str | None = None) -> dict:
    """The shipped prometheus.yml with the classifier job scraping targets (HOST:PORT) and the shipped rules."""
    config = copy.deepcopy(yaml.safe_load(CONFIG_FILE.read_text()))
    config["rule_files"] = [str(RULES_FILE)]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    job.pop("dns_sd_configs", None)  # compose's service names mean nothing outside compose
    job["static_configs"] = [{"targets": list(targets)}]
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        job.pop("scrape_timeout", None)  # Prometheus then takes the smaller of 10 s and the interval
    if evaluation_interval:
        config["global"]["evaluation_interval"] = evaluation_interval
    return config


def write_config(folder: Path, targets: list[str], **intervals: str | None) -> Path:
    """local_config written to folder/prometheus.yml; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(local_config(targets, **intervals), sort_keys=False))
    return path


def prometheus_argv(binary: str, config: Path, *, listen: str, storage: Path) -> list[str]:
    """The prometheus command line for config, listening on listen, keeping its data in storage."""
    return [binary, f"--config.file={config}", f"--web.listen-address={listen}",
            f"--storage.tsdb.path={storage}", "--storage.tsdb.retention.time=2d"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m monitor.prometheus",
        description="Run Debian's prometheus with deploy/prometheus's config and rules against local replicas.")
    parser.add_argument("--target", action="append", default=None, metavar="HOST:PORT",
                        help="a replica's address (repeatable; default 127.0.0.1:3000)")
    parser.add_argument("--listen", default="127.0.0.1:9090", help="Prometheus' own address (default %(default)s)")
    parser.add_argument("--data", type=Path, default=Path(".prometheus"),
                        help="folder for the written config and the time series (default %(default)s)")
    parser.add_argument("--scrape-interval", metavar="DURATION", help="e.g. 5s (default: the shipped file's)")
    parser.add_argument("--evaluation-interval", metavar="DURATION", help="of the rules (default: the shipped file's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()

    def start() -> int:
        binary = find_prometheus()
        if binary is None:
            raise CommandError("prometheus is not installed (Debian/Ubuntu: apt-get install -y prometheus)")
        config = write_config(args.data.resolve(), args.target or ["127.0.0.1:3000"],
                              scrape_interval=args.scrape_interval, evaluation_interval=args.evaluation_interval)
        argv = prometheus_argv(binary, config, listen=args.listen, storage=args.data.resolve() / "tsdb")
        sys.stdout.flush()
        os.execv(binary, argv)  # Prometheus in this process: Ctrl-C stops it
        return 1

    return run_command(start, failure="cannot start prometheus")


if __name__ == "__main__":
    sys.exit(main())
