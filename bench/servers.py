"""Prepare a private model store, then start, measure and stop the servers under test."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

logger = logging.getLogger(__name__)
T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The venv's own commands, whatever PATH says: `make` runs us as .venv/bin/python.
VENV_BIN = Path(sys.executable).parent
MODEL_URI = "models:/ClassificationModel@production"
# "floor": a raw ASGI app on the same uvicorn stack, answering fixed JSON (bench/floor.py).
SERVER_NAMES = ("ours", "mlflow", "fastapi", "floor")
# Settings a developer may have exported that would change what gets trained or served.
_SETTINGS_TO_DROP = ("MLFLOW_ARTIFACT_ROOT", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME",
                     "REGISTERED_MODEL_NAME", "PRODUCTION_ALIAS", "BENTO_MODEL_NAME",
                     "BENTO_MODEL_TAG", "API_KEY", "MAX_ROWS", "MAX_BODY_BYTES")


class BenchError(RuntimeError):
    """The bench cannot go on; the message is one readable line (plus a log tail)."""


class NotReady(BenchError):
    """A server did not answer in time, or its process died while we waited."""


class PortTaken(NotReady):
    """The server exited because another process bound its port first (see start_on_free_port)."""


# How servers word EADDRINUSE in their log: circus (bentoml serve) "OSError: [Errno 98] Address
# already in use", uvicorn (mlflow server, mlflow models serve) "... address already in use".
_ADDRESS_IN_USE = "address already in use"
# free_port() hands out a port the kernel just chose, so a clash is rare: a few tries are plenty.
PORT_ATTEMPTS = 5


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server, when it is ready and where it predicts."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    predict_path: str
    body_format: str  # "features" (ours, FastAPI) or "dataframe_split" (mlflow serve)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on_port(self, port: int) -> ServerSpec:
        """The same server on another port (its command line names the port once)."""
        argv = [str(port) if argument == str(self.port) else argument for argument in self.argv]
        return ServerSpec(self.name, argv, port, self.ready_path, self.predict_path, self.body_format)


@dataclass(frozen=True)
class RunningServer:
    """A started server: its process group leader, log and measured cold start."""

    spec: ServerSpec
    process: subprocess.Popen
    log: Path
    cold_start_s: float


def bench_env(workdir: Path) -> dict[str, str]:
    """The environment of every command: stores inside workdir, this venv first, no telemetry."""
    env = {key: value for key, value in os.environ.items() if key not in _SETTINGS_TO_DROP}
    env.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "BENTOML_HOME": str(workdir / "bentoml"),
        # `mlflow models serve` execs `uvicorn` from PATH: it must be this venv's.
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        # Only 127.0.0.1 traffic: no usage reporting from either library.
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    })
    return env


def run_step(argv: list[str], *, env: dict[str, str]) -> tuple[float, str]:
    """Run one command from the repo root; return its wall time and output, or raise BenchError."""
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise BenchError(f"`{' '.join(argv[1:])}` exited {result.returncode}:\n{tail}")
    return seconds, result.stdout


def prepare_model(env: dict[str, str], training_args: list[str] | None = None) -> dict[str, float]:
    """Train an iris sweep, promote the best and import it; return what each took.

    training_args go to `python -m training.experiments` (e.g. ["--model", "random_forest",
    "--param", "n_estimators=100"]); without them it trains its default sweep.
    """
    python = sys.executable
    command_s, output = run_step([python, "-m", "training.experiments", *(training_args or [])],
                                 env=env)
    # The CLI times the runs itself, after its imports: "6 runs in 12.3 s (tracking store: ...)".
    match = re.search(r"(\d+) runs in ([\d.]+) s", output)
    if match is None:
        raise BenchError("training.experiments did not print its 'N runs in S s' line")
    promote_s, _ = run_step([python, "-m", "training.promote"], env=env)
    import_s, _ = run_step([python, "scripts/import_production.py"], env=env)
    return {"runs": int(match.group(1)), "train_runs_s": float(match.group(2)),
            "train_command_s": command_s, "promote_s": promote_s, "import_s": import_s}


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


def make_spec(name: str) -> ServerSpec:
    """The command line and endpoints of one server, on a fresh port."""
    port = free_port()
    if name == "ours":
        return ServerSpec(name, [str(VENV_BIN / "bentoml"), "serve", "--host", "127.0.0.1",
                                 "--port", str(port)],
                          port, "/readyz", "/predict", "features")
    if name == "mlflow":
        return ServerSpec(name, [str(VENV_BIN / "mlflow"), "models", "serve", "-m", MODEL_URI,
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                                 "-w", "1"],
                          port, "/ping", "/invocations", "dataframe_split")
    if name == "fastapi":
        return ServerSpec(name, [sys.executable, "-m", "bench.fastapi_baseline",
                                 "--host", "127.0.0.1", "--port", str(port)],
                          port, "/health", "/predict", "features")
    if name == "floor":
        # Answers 200 on any path: /health is its readiness URL, /predict gets the same bodies.
        return ServerSpec(name, [sys.executable, "-m", "bench.floor",
                                 "--host", "127.0.0.1", "--port", str(port)],
                          port, "/health", "/predict", "features")
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVER_NAMES)}")


def request_body(spec: ServerSpec, *, rows: list[list[float]], columns: list[str]) -> bytes:
    """The JSON body that asks spec's server for predictions on rows."""
    if spec.body_format == "dataframe_split":
        return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
    return json.dumps({"features": rows}).encode()


def http_status(url: str, *, timeout: float = 1.0) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def start_server(spec: ServerSpec, *, env: dict[str, str], log_dir: Path,
                 timeout: float = 120.0) -> RunningServer:
    """Start spec in its own session and wait for its readiness URL; time process start to 200.

    If another process took spec's port first, the server is started on another free port: the
    returned RunningServer.spec says where it listens.
    """
    log = log_dir / f"{spec.name}.log"

    def start(port: int | None) -> RunningServer:
        started_spec = spec if port is None else spec.on_port(port)
        started = time.monotonic()
        # Polled every 20 ms so that the cold start is not rounded up to the polling interval.
        process = launch_and_wait(started_spec.argv, ready_url=started_spec.url + started_spec.ready_path,
                                  log=log, env=env, timeout=timeout, interval=0.02)
        cold_start_s = time.monotonic() - started
        logger.info("%-8s ready on %s in %.2f s", started_spec.name, started_spec.url, cold_start_s)
        return RunningServer(started_spec, process, log, cold_start_s)

    try:  # first on the port make_spec chose a moment ago
        return start(None)
    except PortTaken:
        return start_on_free_port(start, attempts=PORT_ATTEMPTS - 1)


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


def start_mlflow_server(*, backend_store_uri: str, artifacts: Path, cwd: Path, log: Path,
                        env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` with proxied artifacts on a free 127.0.0.1 port, answering /health.

    Returns its process (its own group: stop it with stop_server) and its URL. A port taken by
    another process before the server bound it is replaced by another (start_on_free_port).
    """
    def start(port: int) -> tuple[subprocess.Popen, str]:
        url = f"http://127.0.0.1:{port}"
        process = launch_and_wait(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(artifacts), "--serve-artifacts"],
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
