"""The whole chain over HTTP against `mlflow server` on a real PostgreSQL backend store.

PostgreSQL comes from the machine (Debian: `apt-get install postgresql`); without it these
tests are skipped with the reason (a failure where REQUIRE=postgres, as in CI).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bentoml
import mlflow
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.servers import forget_mlflow_uris, start_mlflow_server, stop_process_group
from training.config import METRICS, get_settings
from training.promote import main as promote_main
from training.promote import promote_best
from training.sweep import run_experiments

pytestmark = pytest.mark.integration

PG_USER = "mlflow"
PG_DATABASE = "mlflow"


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster on 127.0.0.1 with an empty database for MLflow."""

    port: int
    password: str

    @property
    def store_uri(self) -> str:
        """The SQLAlchemy URI; the password travels as PGPASSWORD, as in docker-compose.postgres.yml."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def query(self, sql: str, *args) -> list[tuple]:
        """Rows of one query, read straight from the database."""
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER,
                              password=self.password, dbname=PG_DATABASE) as connection:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()


@dataclass(frozen=True)
class TrackingServer:
    """`mlflow server` on PostgreSQL with proxied artifacts under artifacts_dir."""

    url: str
    artifacts_dir: Path
    cwd: Path


def _postgres_bin() -> Path:
    """The newest PostgreSQL server binaries on the machine, or skip."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if shutil.which("initdb"):
        candidates.append(shutil.which("initdb"))
    if not candidates:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                    "apt-get install postgresql")

    def major(path: str) -> int:
        parts = Path(path).parts
        return int(parts[-3]) if parts[-3].isdigit() else 0

    return Path(max(candidates, key=major)).parent


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway cluster in a temporary folder, password-protected, stopped at the end."""
    import psycopg2  # a pinned dev dependency: missing it is an error, not a skip

    bindir = _postgres_bin()
    # initdb refuses to run as root: run the server as the postgres system user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's tmp_path: its parents are private to root, and the server is not root.
    root = Path(tempfile.mkdtemp(prefix="mlflow-pg-"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    password = secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")
    data = root / "data"
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run(as_user + list(args), check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
            "--auth", "scram-sha-256", "-E", "UTF8", "--no-instructions")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w",
            "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off", "start")
        connection = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER,
                                      password=password, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {PG_DATABASE}")
        connection.close()
        yield Postgres(port=port, password=password)
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                  "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """`mlflow server` on a free 127.0.0.1 port; its process group is killed at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts, cwd = root / "artifacts", root / "cwd"
    artifacts.mkdir()
    cwd.mkdir()
    process, url = start_mlflow_server(backend_store_uri=postgres.store_uri, artifacts=artifacts,
                                       cwd=cwd, log=root / "server.log",
                                       env={"PGPASSWORD": postgres.password})
    try:
        yield TrackingServer(url=url, artifacts_dir=artifacts, cwd=cwd)
    finally:
        stop_process_group(process)


@pytest.fixture
def server_uris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave no process-wide mlflow URI pointing at a server that stops with this module."""
    yield
    forget_mlflow_uris()


def _child_runs(client, experiment_name: str) -> list:
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _metrics_by_grid_point(client, experiment_name: str) -> dict[tuple[float, str], dict[str, float]]:
    """Each child run's metrics as stored, keyed by its (C, penalty)."""
    return {(float(r.data.params["C"]), r.data.params["penalty"]): {m: r.data.metrics[m] for m in METRICS}
            for r in _child_runs(client, experiment_name)}


def test_chain_over_http_on_postgres_matches_sqlite(trained_store, tracking_server, postgres,
                                                    server_uris, monkeypatch, tmp_path):
    # The reference: the same default sweep on the SQLite store, promoted there.
    sqlite_client = mlflow.MlflowClient()
    expected_metrics = _metrics_by_grid_point(sqlite_client, trained_store.experiment_name)
    expected = promote_best()
    assert len(expected_metrics) == 6

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking_server.url)
    get_settings.cache_clear()
    monkeypatch.chdir(tmp_path)
    results = run_experiments(dataset_name="iris")
    assert promote_main([]) == 0
    client = mlflow.MlflowClient()
    settings = get_settings()
    assert _metrics_by_grid_point(client, settings.experiment_name) == expected_metrics
    production = client.get_model_version_by_alias(settings.registered_model_name, "production")
    assert str(production.version) == expected.version
    assert production.current_stage == "Production"

    # The runs and the registry are rows in PostgreSQL.
    assert postgres.query("SELECT count(*) FROM runs")[0][0] == 7
    assert postgres.query("SELECT count(*) FROM model_versions WHERE name = %s",
                          settings.registered_model_name)[0][0] == 6
    assert postgres.query("SELECT version FROM registered_model_aliases WHERE name = %s AND alias = %s",
                          settings.registered_model_name, "production") == [(int(expected.version),)]

    # Every artifact went through the server into its artifacts folder; none landed locally.
    experiment = client.get_experiment_by_name(settings.experiment_name)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    for result in results:
        run = client.get_run(result.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        stored = tracking_server.artifacts_dir / experiment.experiment_id / result.run_id / "artifacts"
        assert (stored / "scaler" / "scaler.skops").is_file()
        assert (stored / "confusion_matrix.png").is_file()
    assert len(list(tracking_server.artifacts_dir.rglob("MLmodel"))) == 6
    assert not any((tmp_path / name).exists() for name in ("mlartifacts", "mlruns"))
    assert not any((tracking_server.cwd / name).exists() for name in ("mlartifacts", "mlruns"))

    # The documented import command, against the server, into this test's BentoML store.
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "import_production.py")],
                          cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tag = f"classification_model:v{expected.version}-{production.run_id[:12]}"
    assert proc.stdout.strip().splitlines()[-1].startswith(f"imported {tag} ")
    model = bentoml.models.get(tag)
    assert model.info.labels["registered_version"] == expected.version
    assert model.info.metadata["tracking_uri"] == tracking_server.url
    promoted_grid_point = next((r.params.params["C"], r.params.params["penalty"]) for r in results
                               if r.version == expected.version)
    assert model.info.metadata["metrics"] == expected_metrics[promoted_grid_point]
