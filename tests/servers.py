"""Helpers for tests that start real servers: wait for them over HTTP, stop them for good."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One way to probe, wait for and stop a server group, shared with the benchmark.
from bench.servers import NotReady, wait_for_http
from bench.servers import stop_server as stop_process_group

__all__ = ["NotReady", "forget_mlflow_uris", "start_mlflow_server", "stop_process_group", "wait_for_http"]


def forget_mlflow_uris() -> None:
    """Drop mlflow's process-wide tracking and registry URIs, which outrank the environment."""
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def start_mlflow_server(*, backend_store_uri: str, artifacts: Path, cwd: Path, log: Path,
                        env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` with proxied artifacts on a free 127.0.0.1 port, answering /health.

    Returns its process (its own group: stop it with stop_process_group) and its URL.
    """
    from tests.conftest import free_port

    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(artifacts), "--serve-artifacts"],
            cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", timeout=180, alive=lambda: process.poll() is None, log=log)
    except BaseException:
        stop_process_group(process)
        raise
    return process, url
