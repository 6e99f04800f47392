"""Faults in the command-line tools: one clear line, a non-zero exit, nothing half-written."""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO_ROOT
from tests.servers import fixed_page, running_http_server
from tests.integration.test_import import _store_snapshot
from training.experiments import main as experiments_main
from release.bento_store import PAUSE_ENV, PAUSE_STEPS, STAGING_PREFIX
from release.importer import bento_tag, import_production
from release.importer import main as import_main
from training.promote import promote_best

pytestmark = pytest.mark.integration

# Only a guard against a hang: nothing is timed.
HANG_GUARD = 300


def _run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_alias_on_a_deleted_version_is_one_line_and_no_import(trained_store, capsys):
    client = mlflow.MlflowClient()
    name = trained_store.registered_model_name
    promote_best()
    target = str(client.get_model_version_by_alias(name, "production").version)
    client.delete_model_version(name, target)
    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    assert import_main([]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: no production version")
    assert _store_snapshot(home) == before


def test_unwritable_bentoml_store_is_one_line(trained_store, tmp_path):
    promote_best()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the BentoML home should be")
    proc = _run_cli(["scripts/import_production.py"], BENTOML_HOME=str(blocker / "home"),
                    MLFLOW_TRACKING_URI=trained_store.tracking_uri)
    assert proc.returncode == 1
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    # The one line is about the store, not some other fault met on the way.
    assert lines == [f"error: cannot write to the BentoML store at {blocker / 'home'}: Not a directory"], lines
    assert "Traceback" not in proc.stderr


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under root."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def _model_store(home: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) of the BentoML model store under home."""
    return _tree(home / "models")


# A web server that is not MLflow: every GET and POST is a 200 HTML page.
_NOT_MLFLOW = fixed_page(b"<html><body>\n<h1>Welcome</h1>\n</body></html>\n", content_type="text/html")


class _NotFound(http.server.SimpleHTTPRequestHandler):
    """Python's file server on an empty folder: every path is a 404 HTML page."""

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _tracking_uri_of(kind: str, tmp_path: Path) -> Iterator[str]:
    """An http:// URI on 127.0.0.1 where no MLflow answers: nothing listening, a socket that never
    answers, or a real HTTP server that is not MLflow. Every port is held by us while in use."""
    if kind in ("closed", "silent"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, so no one else takes the port meanwhile
            if kind == "silent":
                sock.listen(8)  # the kernel accepts connections; nobody ever reads or answers
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        return
    empty = tmp_path / "empty-site"
    empty.mkdir()
    handler = _NOT_MLFLOW if kind == "html_200" else \
        lambda *args: _NotFound(*args, directory=str(empty))
    with running_http_server(handler) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind, words", [
    ("closed", f"is unreachable ([Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)})"),
    ("silent", "is unreachable (timed out)"),
    ("not_found", "is unreachable (HTTP 404)"),
    ("html_200", "answers, but not as an MLflow tracking server"),
])
@pytest.mark.parametrize("command", [["scripts/import_production.py"], ["-m", "training.promote"]],
                         ids=["import", "promote"])
def test_no_mlflow_at_the_tracking_uri_is_exit_1_with_one_line_naming_it(command, kind, words, tmp_path):
    """As users run the commands; the BentoML home and the registry are left as they were."""
    home = Path(os.environ["BENTOML_HOME"])
    before = _tree(home)
    with _tracking_uri_of(kind, tmp_path) as uri:
        proc = _run_cli(command, MLFLOW_TRACKING_URI=uri, MLFLOW_CONNECT_TIMEOUT="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and uri in lines[0] and words in lines[0], lines
    assert _tree(home) == before


def _import_killed_at(step: str, *, tmp_path: Path) -> None:
    """Run the import command until it stops at step (IMPORT_PAUSE_AT), then SIGKILL it there."""
    env = {**os.environ, PAUSE_ENV: step, "TMPDIR": str(tmp_path)}  # its temporary folder too
    process = subprocess.Popen([sys.executable, "scripts/import_production.py"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)  # the command ended without stopping at step

    threading.Thread(target=read, daemon=True).start()
    seen = []
    try:
        while (line := lines.get(timeout=HANG_GUARD)) is not None:
            seen.append(line)
            if line.strip() == f"{PAUSE_ENV}: paused at {step}":
                break
        else:
            pytest.fail(f"the import ended (exit {process.wait()}) before {step}: {''.join(seen)[-2000:]}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _serve_one_then_promote_another(settings) -> tuple:
    """Import the promoted version, then move @production to another version; (that import, the
    tag the other version will get)."""
    import bentoml

    from release.importer import resolve_production

    client = mlflow.MlflowClient()
    name = settings.registered_model_name
    promote_best()
    served = import_production(settings=settings)
    assert served.created
    run_id = bentoml.models.get(served.tag).info.labels["run_id"]
    other = max((v for v in client.search_model_versions(f"name = '{name}'") if v.run_id != run_id),
                key=lambda v: int(v.version))
    client.set_registered_model_alias(name, "production", other.version)
    new_tag = bento_tag(settings, resolve_production(client, name=name, alias="production"))
    assert new_tag != served.tag
    return served, new_tag


@pytest.mark.parametrize("step", PAUSE_STEPS)
def test_an_import_killed_at_each_step_leaves_the_store_as_it_was_or_complete(trained_store, tmp_path, step):
    """Killed before the publishing rename: the store is unchanged. After it: it holds exactly the
    new model in addition, complete and loadable. Either way the next import succeeds and leaves
    no staging folder."""
    import bentoml

    from serving.model import load_model

    home = Path(os.environ["BENTOML_HOME"])
    served, new_tag = _serve_one_then_promote_another(trained_store)
    new_folder = str(Path(*new_tag.split(":")))  # classification_model/v<version>-<run>
    before = _model_store(home)

    _import_killed_at(step, tmp_path=tmp_path / "tmp")
    after = _model_store(home)
    staging = list(home.glob(f"{STAGING_PREFIX}*"))
    if step in ("downloaded", "converted"):
        assert staging == []
    else:  # the model is complete in the staging store (emptied by the rename once published)
        assert len(staging) == 1
        assert (step == "published") != any(staging[0].rglob("model.yaml"))
    if step != "published":
        assert after == before
    else:
        added = {path for path in after if path not in before}
        assert {path for path in before if after.get(path, "gone") != before[path]} == set()
        assert added and all(path == new_folder or path.startswith(new_folder + "/") for path in added), added
        model = bentoml.models.get(new_tag)
        load_model(Path(model.path), model.info.metadata, tag=new_tag)  # checks every file's sha256
        assert {f"{new_folder}/{relative}" for relative in model.info.metadata["sha256"]} <= added

    result = import_production(settings=trained_store)
    assert result.tag == new_tag and result.created == (step != "published")
    if step != "published":  # after it, see the known fault below
        assert list(home.glob(f"{STAGING_PREFIX}*")) == []
    model = bentoml.models.get(new_tag)
    load_model(Path(model.path), model.info.metadata, tag=new_tag)
    load_model(Path(bentoml.models.get(served.tag).path), bentoml.models.get(served.tag).info.metadata,
               tag=served.tag)
    # What the store held is untouched (but `latest`, which the import may move).
    assert {path: content for path, content in _model_store(home).items()
            if path in before and not path.endswith("/latest")} == \
        {path: content for path, content in before.items() if not path.endswith("/latest")}
    if step != "published":
        assert str(bentoml.models.get("classification_model:latest").tag) == new_tag


def test_the_import_after_one_killed_just_after_publishing_finishes_it(trained_store, tmp_path):
    import bentoml

    home = Path(os.environ["BENTOML_HOME"])
    _, new_tag = _serve_one_then_promote_another(trained_store)
    _import_killed_at("published", tmp_path=tmp_path / "tmp")
    assert import_production(settings=trained_store).tag == new_tag
    assert list(home.glob(f"{STAGING_PREFIX}*")) == []
    assert str(bentoml.models.get("classification_model:latest").tag) == new_tag


def test_failed_training_run_is_marked_failed(mlflow_store, tmp_path, capsys):
    assert experiments_main(["--C", "1", "--penalty", "l2"]) == 0
    experiment = mlflow.get_experiment_by_name(mlflow_store.experiment_name)
    artifacts = Path(experiment.artifact_location.removeprefix("file://"))
    # Artifacts can no longer be written: a file now stands where the folder was.
    os.rename(artifacts, tmp_path / "moved")
    artifacts.write_text("blocked")
    capsys.readouterr()
    assert experiments_main(["--C", "10", "--penalty", "l1"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: training failed"), out
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 2  # the sweep and its child
    client = mlflow.MlflowClient()
    assert len(client.search_model_versions(f"name = '{mlflow_store.registered_model_name}'")) == 1


def test_tracking_server_dying_mid_sweep_is_one_line(tmp_path):
    """A real `mlflow server`, stopped while the experiments command is logging to it."""
    from tests.servers import start_mlflow_server, stop_process_group

    server, url = start_mlflow_server(backend_store_uri=f"sqlite:///{tmp_path / 'server.db'}",
                                      artifacts=tmp_path / "artifacts", cwd=tmp_path,
                                      log=tmp_path / "server.log")
    try:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "training.experiments"], cwd=REPO_ROOT, text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": url},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        for line in sweep.stdout:
            lines.append(line.rstrip())
            if line.startswith("run 1/6"):
                stop_process_group(server)  # the server goes away mid-sweep
                break
        lines += sweep.stdout.read().strip().splitlines()
        assert sweep.wait(timeout=300) == 1
    finally:
        stop_process_group(server)
    assert lines[-1].startswith("error:"), lines[-5:]
    assert not any("Traceback" in line for line in lines), lines
    progress = [line for line in lines if line.startswith("run ")]
    assert progress and len(progress) < 6
