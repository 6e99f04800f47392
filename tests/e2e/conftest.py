"""A real `bentoml serve` process on 127.0.0.1, serving a model trained, promoted and imported here."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port, use_bentoml_home, use_store
from tests.servers import NotReady, stop_process_group, wait_for_http

BENTOML = Path(os.environ.get("VIRTUAL_ENV", REPO_ROOT / ".venv")) / "bin" / "bentoml"


@dataclass(frozen=True)
class Server:
    """A running service and the stores behind it."""

    url: str
    tracking_uri: str
    bentoml_home: Path
    process: subprocess.Popen
    log: Path


def start_server(*, home: Path, env: dict[str, str] | None = None, timeout: float = 90) -> Server:
    """Start `bentoml serve` from the repo root and wait for /readyz to answer 200."""
    port = free_port()
    log = home / f"serve-{port}.log"
    process = subprocess.Popen(
        [str(BENTOML if BENTOML.exists() else shutil.which("bentoml")), "serve",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT, env={**os.environ, "BENTOML_HOME": str(home), **(env or {})},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", timeout=timeout, alive=lambda: process.poll() is None,
                      log=log, interval=0.2)
    except NotReady:
        stop_process_group(process)
        raise
    return Server(url, os.environ.get("MLFLOW_TRACKING_URI", ""), home, process, log)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained_template: Path):
    """Promote and import in this module's own stores, then serve the result."""
    directory = tmp_path_factory.mktemp("served")
    shutil.copy(trained_template / "mlflow.db", directory / "mlflow.db")
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = use_store(monkeypatch, directory)
        home = use_bentoml_home(monkeypatch, directory / "bentoml")
        from training.importer import import_production
        from training.promote import promote_best

        promote_best()
        import_production()
        server = start_server(home=home)
        server = Server(server.url, settings.tracking_uri, home, server.process, server.log)
    yield server
    stop_process_group(server.process)
