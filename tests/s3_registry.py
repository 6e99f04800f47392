"""An `mlflow server` whose artifacts live in a bucket of a test SeaweedFS, in either of MLflow's modes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.seaweed import SeaweedFS
from tests.servers import forget_mlflow_uris, start_mlflow_server, stop_process_group
from training.config import get_settings

# What a client could reach the bucket with; proxied clients must hold none of it.
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL")
PREFIX = "artifacts"


@dataclass(frozen=True)
class Registry:
    """The tracking server's URL, its bucket, and where it runs."""

    mode: str  # "proxied" or "direct"
    url: str
    bucket: str
    server_cwd: Path
    process: object


def bucket_key(registry: Registry, artifact_uri: str, path: str) -> str:
    """The bucket key of the file at path under an artifact URI (mlflow-artifacts:/ or s3://)."""
    if artifact_uri.startswith("s3://"):
        bucket, _, rest = artifact_uri.removeprefix("s3://").partition("/")
        assert bucket == registry.bucket, artifact_uri
    else:
        rest = f"{PREFIX}/" + artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    return f"{rest.rstrip('/')}/{path}"


def start_registry(seaweed: SeaweedFS, root: Path, *, mode: str, bucket: str | None = None,
                   server_env: dict[str, str] | None = None, app_name: str | None = None,
                   extra_env: dict[str, str] | None = None) -> Registry:
    """A new bucket (unless given) and an `mlflow server` on SQLite writing its artifacts there."""
    bucket = bucket or seaweed.create_bucket(f"{mode}-{uuid.uuid4().hex[:10]}")
    root.mkdir(parents=True, exist_ok=True)
    env = server_env if server_env is not None else (seaweed.env() if mode == "proxied" else {})
    process, url = start_mlflow_server(backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
                                       artifacts=f"s3://{bucket}/{PREFIX}", cwd=root, log=root / "server.log",
                                       env={**env, **(extra_env or {})}, direct=mode == "direct",
                                       app_name=app_name)
    return Registry(mode=mode, url=url, bucket=bucket, server_cwd=root, process=process)


def use_registry(monkeypatch: pytest.MonkeyPatch, registry: Registry, seaweed: SeaweedFS) -> None:
    """Point this process (and its subprocesses) at the registry: direct clients get S3 keys."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry.url)
    if registry.mode == "direct":
        for name, value in seaweed.env().items():
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def forget_s3_clients() -> None:
    """Drop the S3 clients MLflow keeps for 5 minutes and boto3's default session: both hold the
    keys read from the environment when they were made."""
    import boto3
    from mlflow.store.artifact.s3_artifact_repo import _cached_get_s3_client

    _cached_get_s3_client.cache_clear()
    boto3.DEFAULT_SESSION = None


def clear_s3_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No S3 credentials or endpoint in this process's environment (nor in MLflow's cached clients)."""
    forget_s3_clients()
    for name in S3_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def running_registry(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedFS, root: Path, *, mode: str,
                     **options) -> Iterator[Registry]:
    """start_registry, this process pointed at it (no S3 keys unless direct), stopped on exit."""
    clear_s3_environment(monkeypatch)
    server = start_registry(seaweed, root, mode=mode, **options)
    try:
        use_registry(monkeypatch, server, seaweed)
        yield server
    finally:
        forget_mlflow_uris()
        stop_process_group(server.process)


def registry_fixture():
    """A function-scoped fixture `registry`, parametrized indirectly with the mode."""

    @pytest.fixture
    def registry(request, seaweed, tmp_path, monkeypatch):
        with running_registry(monkeypatch, seaweed, tmp_path / "mlflow-server", mode=request.param) as server:
            yield server

    return registry
