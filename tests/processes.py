"""Start server processes for tests (and the bench), wait for them over HTTP, stop them for good.

Each server runs in a session of its own and counts as ready once its readiness URL answers 200
from a process of its own tree; stop_server ends that whole tree. The ports come from free_port,
and start_on_free_port tries another when a server finds its port taken.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

logger = logging.getLogger(__name__)
T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


class NotReady(RuntimeError):
    """A server did not answer in time, or its process died while we waited."""


class PortTaken(NotReady):
    """The server exited because another process bound its port first (see start_on_free_port)."""


# How servers word EADDRINUSE in their log: circus (bentoml serve) "OSError: [Errno 98] Address
# already in use", uvicorn (mlflow server, mlflow models serve) "... address already in use".
_ADDRESS_IN_USE = "address already in use"
# free_port() hands out a port the kernel just chose, so a clash is rare: a few tries are plenty.
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The port is released before it is returned: another process may bind it before the caller's
    server does. Start servers with start_on_free_port, which tries another port then.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_on_free_port(start: Callable[[int], T], *, attempts: int = PORT_ATTEMPTS) -> T:
    """start(port) on a free port; again on another free port while start raises PortTaken.

    start must launch the server on that port and wait for it (wait_for_http raises PortTaken
    when the process exited saying its address was in use), and stop it on any failure.
    """
    for attempt in range(1, attempts + 1):
        port = free_port()
        try:
            return start(port)
        except PortTaken:
            logger.info("port %d was taken before the server bound it (try %d of %d)", port, attempt, attempts)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def http_status(url: str, *, timeout: float = 1.0) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def wait_for_http(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    log: Path | None = None,
    interval: float = 0.5,
    owner: int | None = None,
) -> float:
    """Poll url until it answers 200; return the seconds it took. alive() False ends the wait.

    With owner (a process id), a 200 counts only once that process or one of its descendants
    listens on url's port: another server that took the port first answers too.
    """
    started = time.monotonic()
    while True:
        if http_status(url, timeout=3.0) == 200 and (owner is None or tree_listens(owner, url)):
            return time.monotonic() - started
        if not alive():
            if log is not None and port_was_taken(log):
                raise PortTaken(f"{url}: the port was taken before the server bound it{log_tail(log)}")
            raise NotReady(f"{url}: the server process exited{log_tail(log) if log else ''}")
        if time.monotonic() - started > timeout:
            raise NotReady(f"{url}: no 200 within {timeout:.0f} s{log_tail(log) if log else ''}")
        time.sleep(interval)


def tree_listens(pid: int, url: str) -> bool:
    """True if process pid or one of its descendants listens on url's TCP port."""
    port = urllib.parse.urlsplit(url).port
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for process in processes:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in process.net_connections(kind="tcp")):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def port_was_taken(log: Path) -> bool:
    """True if a server's log says it could not bind its address because it was in use."""
    return log.exists() and _ADDRESS_IN_USE in log.read_text(errors="replace").lower()


def stop_server(process: subprocess.Popen, *, grace: float = 15.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left of it and its descendants."""
    try:
        # BentoML's arbiter starts each worker in a session of its own, outside the group.
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    # Workers can outlive a leader that already exited: the group goes, not just the leader.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in descendants:
        try:
            child.kill()  # psutil checks that the pid still names that process
        except psutil.NoSuchProcess:
            pass
    process.wait()


def launch_and_wait(argv: list[str], *, ready_url: str, log: Path, env: dict[str, str],
                    cwd: Path = REPO_ROOT, timeout: float, interval: float = 0.2) -> subprocess.Popen:
    """Start argv in a session of its own, output to log; return once ready_url answers it 200.

    Stops the process group again if it never gets ready (NotReady, or PortTaken when another
    process took the port first: start_on_free_port then tries another).
    """
    with log.open("wb") as output:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_http(ready_url, timeout=timeout, alive=lambda: process.poll() is None, log=log,
                      interval=interval, owner=process.pid)
    except BaseException:
        stop_server(process)
        raise
    return process


def start_mlflow_server(*, backend_store_uri: str, artifacts: Path | str, cwd: Path, log: Path,
                        env: dict[str, str] | None = None, direct: bool = False,
                        app_name: str | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` with proxied artifacts on a free 127.0.0.1 port, answering /health.

    artifacts is a folder or an s3:// URI; direct: clients write there themselves
    (--no-serve-artifacts); app_name: e.g. basic-auth. Returns its process (its own group: stop it
    with stop_server) and its URL. A port taken by another process before the server bound it is
    replaced by another (start_on_free_port).
    """
    where = (["--default-artifact-root", str(artifacts), "--no-serve-artifacts"] if direct
             else ["--artifacts-destination", str(artifacts), "--serve-artifacts"])
    app = ["--app-name", app_name] if app_name else []

    def start(port: int) -> tuple[subprocess.Popen, str]:
        url = f"http://127.0.0.1:{port}"
        process = launch_and_wait(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend_store_uri, *where, *app],
            ready_url=f"{url}/health", log=log, cwd=cwd, timeout=180, interval=0.5,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})
        return process, url

    return start_on_free_port(start)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def log_tail(log: Path, lines: int = 20) -> str:
    """The last lines of a server log, ready to append to an error message."""
    if not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log.name} ---\n" + "\n".join(text)
