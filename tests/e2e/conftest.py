"""A real `bentoml serve` process on 127.0.0.1, serving a model trained, promoted and imported here."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, use_bentoml_home, use_store
from tests.servers import launch_and_wait, start_on_free_port, stop_process_group

BENTOML = Path(os.environ.get("VIRTUAL_ENV", REPO_ROOT / ".venv")) / "bin" / "bentoml"


@dataclass(frozen=True)
class Server:
    """A running service and the stores behind it."""

    url: str
    tracking_uri: str
    bentoml_home: Path
    process: subprocess.Popen
    log: Path


def private_home(home: Path, *, port: int) -> Path:
    """A BentoML home of one server's own that shares home's model store.

    `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it starts (BentoML
    1.4.40, bentoml.serving.ensure_prometheus_dir): a second server on the same home would wipe
    the first one's /metrics series.
    """
    own = home.parent / f"{home.name}-serve-{port}"
    own.mkdir(exist_ok=True)
    if not (own / "models").exists():
        (own / "models").symlink_to(home / "models", target_is_directory=True)
    return own


def serve_command(*, home: Path, port: int, env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """`bentoml serve` on 127.0.0.1:port serving home's model store: its argv and environment."""
    argv = [str(BENTOML if BENTOML.exists() else shutil.which("bentoml")), "serve",
            "--host", "127.0.0.1", "--port", str(port)]
    return argv, {**os.environ, "BENTOML_HOME": str(private_home(home, port=port)), **(env or {})}


def launch_server(*, home: Path, port: int, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """Start `bentoml serve` from the repo root on port, without waiting; its process and log (in home)."""
    argv, environment = serve_command(home=home, port=port, env=env)
    log = home / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=environment, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def start_server(*, home: Path, env: dict[str, str] | None = None, timeout: float = 90) -> Server:
    """Start `bentoml serve` on a free port and wait for its /readyz to answer 200.

    A port another process took first is replaced by another (start_on_free_port).
    """
    def start(port: int) -> Server:
        argv, environment = serve_command(home=home, port=port, env=env)
        url, log = f"http://127.0.0.1:{port}", home / f"serve-{port}.log"
        process = launch_and_wait(argv, ready_url=f"{url}/readyz", log=log, env=environment, timeout=timeout)
        return Server(url, os.environ.get("MLFLOW_TRACKING_URI", ""), home, process, log)

    return start_on_free_port(start)


@contextlib.contextmanager
def imported_home(directory: Path, trained_template: Path) -> Iterator[tuple[str, Path]]:
    """Inside: a copy of the trained store in directory, promoted and imported there, and the
    environment pointing at it (servers started inside inherit it); its tracking URI and BentoML home."""
    shutil.copy(trained_template / "mlflow.db", directory / "mlflow.db")
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = use_store(monkeypatch, directory)
        home = use_bentoml_home(monkeypatch, directory / "bentoml")
        from release.importer import import_production
        from training.promote import promote_best

        promote_best()
        import_production()
        yield settings.tracking_uri, home


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained_template: Path):
    """Promote and import in this module's own stores, then serve the result."""
    with imported_home(tmp_path_factory.mktemp("served"), trained_template) as (tracking_uri, home):
        server = start_server(home=home)
        server = Server(server.url, tracking_uri, home, server.process, server.log)
    yield server
    stop_process_group(server.process)
