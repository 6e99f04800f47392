"""Prepare a private model store, then start, measure and stop the servers under test.

Starting, waiting for and stopping a process come from the tests' support code (tests/processes.py),
which both share; run the bench from the repo root (`python -m bench.run`) so that it imports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests import processes
# Also imported from here by the rest of the bench: log_tail, start_mlflow_server, stop_server, tree_rss_mb.
from tests.processes import (  # noqa: F401
    PORT_ATTEMPTS,
    NotReady,
    PortTaken,
    free_port,
    launch_and_wait,
    log_tail,
    start_mlflow_server,
    start_on_free_port,
    stop_server,
    tree_rss_mb,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The venv's own commands, whatever PATH says: `make` runs us as .venv/bin/python.
VENV_BIN = Path(sys.executable).parent
MODEL_URI = "models:/ClassificationModel@production"
# A smaller sweep than the family's default grid, to keep training short (--param overrides).
BENCH_PARAMS = {
    "random_forest": ("n_estimators=100",),  # 2 runs (max_depth None, 8), 100 trees each
    "hist_gradient_boosting": ("learning_rate=0.1",),  # 2 runs (max_leaf_nodes 15, 31)
}
# "floor": a raw ASGI app on the same uvicorn stack, answering fixed JSON (bench/floor.py).
# "shadow": ours with a challenger in the shadow (the same imported model: the same family's cost).
SERVER_NAMES = ("ours", "mlflow", "fastapi", "floor", "shadow")
SHADOW_TAG = "classification_model:latest"
# Settings a developer may have exported that would change what gets trained or served.
_SETTINGS_TO_DROP = ("MLFLOW_ARTIFACT_ROOT", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME",
                     "REGISTERED_MODEL_NAME", "PRODUCTION_ALIAS", "BENTO_MODEL_NAME",
                     "BENTO_MODEL_TAG", "API_KEY", "MAX_ROWS", "MAX_BODY_BYTES")


class BenchError(RuntimeError):
    """The bench cannot go on; the message is one readable line (plus a log tail)."""


class ServerNotReady(BenchError, NotReady):
    """A server did not get ready (NotReady): a BenchError too, which ends the run with its message."""


@contextlib.contextmanager
def not_ready_as_bench_error() -> Iterator[None]:
    """Inside: a NotReady (or PortTaken) raised by tests.processes leaves as a ServerNotReady."""
    try:
        yield
    except ServerNotReady:
        raise
    except NotReady as error:
        raise ServerNotReady(str(error)) from error


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server, when it is ready and where it predicts."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    predict_path: str
    body_format: str  # "features" (ours, FastAPI), "records" (ours, named columns) or "dataframe_split" (mlflow)
    env: dict[str, str] = field(default_factory=dict)  # on top of the bench's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on_port(self, port: int) -> ServerSpec:
        """The same server on another port (its command line names the port once)."""
        argv = [str(port) if argument == str(self.port) else argument for argument in self.argv]
        return replace(self, argv=argv, port=port)


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


def training_args(family: str, params: list[str] | tuple[str, ...]) -> list[str]:
    """The `python -m training.experiments` arguments: the family, then each --param."""
    return ["--model", family, *(arg for text in params for arg in ("--param", text))]


def prepare_model(env: dict[str, str], training_args: list[str] | None = None) -> dict[str, float]:
    """Train a sweep (iris unless the args name --data), promote the best and import it; return what each took.

    training_args go to `python -m training.experiments` (e.g. ["--model", "random_forest",
    "--param", "n_estimators=100"], or ["--data", FILE, "--target", COLUMN, ...]); without
    them it trains its default iris sweep.
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


def make_spec(name: str) -> ServerSpec:
    """The command line and endpoints of one server, on a fresh port."""
    port = free_port()
    if name in ("ours", "shadow"):
        return ServerSpec(name, [str(VENV_BIN / "bentoml"), "serve", "--host", "127.0.0.1",
                                 "--port", str(port)],
                          port, "/readyz", "/predict", "features",
                          env={"SHADOW_MODEL_TAG": SHADOW_TAG} if name == "shadow" else {})
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


def request_body(spec: ServerSpec, *, rows: list[list], columns: list[str]) -> bytes:
    """The JSON body that asks spec's server for predictions on rows (None: a missing value)."""
    if spec.body_format == "dataframe_split":
        return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
    if spec.body_format == "records":
        return json.dumps({"records": [dict(zip(columns, row)) for row in rows]}).encode()
    return json.dumps({"features": rows}).encode()


def fetch_json(server: RunningServer, path: str) -> dict:
    """The JSON object a server answers to GET path; BenchError when it does not."""
    try:
        with urllib.request.urlopen(server.spec.url + path, timeout=10) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError) as error:
        raise BenchError(f"{server.spec.name}: GET {path} failed: {error}") from None
    return answer if isinstance(answer, dict) else {}


def served_model(server: RunningServer) -> dict:
    """The "model" block of our service's GET /health: version, run, served_form, ..."""
    model = fetch_json(server, "/health").get("model") or {}
    if not model.get("served_form"):
        raise BenchError(f"{server.spec.name}: GET /health names no model.served_form: "
                         f"{str(model)[:200]}")
    return model


@not_ready_as_bench_error()
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
                                  log=log, env={**env, **spec.env}, timeout=timeout, interval=0.02)
        cold_start_s = time.monotonic() - started
        logger.info("%-8s ready on %s in %.2f s", started_spec.name, started_spec.url, cold_start_s)
        return RunningServer(started_spec, process, log, cold_start_s)

    try:  # first on the port make_spec chose a moment ago
        return start(None)
    except PortTaken:
        return start_on_free_port(start, attempts=PORT_ATTEMPTS - 1)


@not_ready_as_bench_error()
def wait_for_http(url: str, **options) -> float:
    """tests.processes.wait_for_http, for the bench: a server that never answers is a ServerNotReady."""
    return processes.wait_for_http(url, **options)


def check_shadow(server: RunningServer) -> None:
    """BenchError unless the server's GET /metadata says its challenger is scoring."""
    shadow = fetch_json(server, "/metadata").get("shadow") or {}
    if shadow.get("status") != "scoring":
        raise BenchError(f"{server.spec.name}: the challenger is not scoring: {str(shadow)[:200]}")


def shadow_counts(servers: list[RunningServer]) -> dict[str, float]:
    """Rows the shadow server's challenger scored, requests it dropped and failed on ({} without one)."""
    from tests.servers import metric_total

    for server in servers:
        if server.spec.name == "shadow":
            try:
                with urllib.request.urlopen(server.spec.url + "/metrics", timeout=10) as response:
                    page = response.read().decode()
            except OSError as error:
                raise BenchError(f"shadow: GET /metrics failed: {error}") from None
            return {key: metric_total(page, f"shadow_{name}_total") for key, name in
                    (("rows", "rows"), ("dropped", "dropped_requests"), ("errors", "errors"))}
    return {}
