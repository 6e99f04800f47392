"""Helpers for tests that start real servers: wait for them over HTTP, stop them for good."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class NotReady(RuntimeError):
    """A server did not answer in time, or its process died while we waited."""


def http_status(url: str, *, timeout: float = 3.0) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


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
        if http_status(url) == 200:
            return time.monotonic() - started
        if not alive():
            raise NotReady(f"{url}: the server process exited{_tail(log)}")
        if time.monotonic() - started > timeout:
            raise NotReady(f"{url}: no 200 within {timeout:.0f} s{_tail(log)}")
        time.sleep(interval)


def stop_process_group(process: subprocess.Popen, *, grace: float = 20.0) -> None:
    """SIGTERM the process group a server was started in (start_new_session), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    # Whatever of the group is left (workers of a leader that already exited) goes too.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- last lines of " + str(log) + " ---\n" + "\n".join(text)


def forget_mlflow_uris() -> None:
    """Drop mlflow's process-wide tracking and registry URIs, which outrank the environment."""
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
