"""Helpers for tests that start real servers: wait for them over HTTP, stop them for good."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench.servers import http_status, log_tail, stop_server

# One way to probe, stop a server group and show its log, shared with the benchmark.
stop_process_group = stop_server


class NotReady(RuntimeError):
    """A server did not answer in time, or its process died while we waited."""


def wait_for_http(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    log: Path | None = None,
    interval: float = 0.5,
) -> float:
    """Poll url until it answers 200; return the seconds it took. alive() False ends the wait."""
    started = time.monotonic()
    while True:
        if http_status(url, timeout=3.0) == 200:
            return time.monotonic() - started
        if not alive():
            raise NotReady(f"{url}: the server process exited{log_tail(log) if log else ''}")
        if time.monotonic() - started > timeout:
            raise NotReady(f"{url}: no 200 within {timeout:.0f} s{log_tail(log) if log else ''}")
        time.sleep(interval)


def forget_mlflow_uris() -> None:
    """Drop mlflow's process-wide tracking and registry URIs, which outrank the environment."""
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
