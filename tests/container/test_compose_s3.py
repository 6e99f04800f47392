"""docker-compose.s3.yml for real: SeaweedFS built here, MLflow proxying artifacts to its bucket, basic-auth."""

from __future__ import annotations

import secrets
import uuid

import boto3
import httpx
import mlflow
import pytest

from tests.conftest import REPO_ROOT, free_port, lr_grid
from tests.container.conftest import published_ports, wait_for_container
from tests.servers import forget_mlflow_uris
from training.config import get_settings
from training.promote import promote_best
from training.sweep import run_experiments

pytestmark = pytest.mark.container

S3_OVERRIDE = REPO_ROOT / "docker-compose.s3.yml"
SECRETS = ("S3_ACCESS_KEY", "S3_SECRET_KEY", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


def test_s3_override_needs_its_secrets_keeps_artifacts_in_the_bucket_and_a_login(engine, compose_stack,
                                                                                tmp_path, monkeypatch):
    project = f"{compose_stack.project}s3"
    files = ("-f", str(S3_OVERRIDE))
    env = {**compose_stack.env, "MLFLOW_PORT": str(free_port()), "S3_PORT": str(free_port()),
           "SEAWEEDFS_IMAGE": f"classifier-seaweedfs-test:{uuid.uuid4().hex[:8]}"}
    for name in SECRETS:
        env.pop(name, None)
    refused = engine.compose_run(project, *files, "up", "-d", "seaweedfs", "mlflow", env=env, check=False)
    assert refused.returncode != 0 and "set S3_" in refused.stdout + refused.stderr
    assert engine.run("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout == ""

    values = {name: secrets.token_hex(12) for name in SECRETS}
    env.update(values)
    url = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    try:
        engine.compose_run(project, *files, "build", "seaweedfs", env=env, timeout=900)
        engine.compose_run(project, *files, "up", "-d", "seaweedfs", "mlflow", env=env)
        wait_for_container(engine, engine.container_of(project, "mlflow"), f"{url}/health")
        # Without a login the registry answers nothing.
        assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}).status_code == 401
        monkeypatch.chdir(tmp_path)
        for name, value in {"MLFLOW_TRACKING_URI": url, "MLFLOW_REGISTRY_URI": url,
                            "MLFLOW_TRACKING_USERNAME": "admin",
                            "MLFLOW_TRACKING_PASSWORD": values["MLFLOW_ADMIN_PASSWORD"]}.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        get_settings.cache_clear()
        try:
            results = run_experiments(dataset_name="iris", grid=lr_grid([1.0], ["l2"]))
            promoted = promote_best()
            version = mlflow.MlflowClient().get_model_version("ClassificationModel", promoted.version)
        finally:
            forget_mlflow_uris()
        assert promoted.version == results[0].version and version.tags["promoted_by"] == "admin"

        # The artifacts are in the bucket the override created, reached on the published S3 port.
        bucket = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{env['S3_PORT']}", region_name="us-east-1",
                              aws_access_key_id=values["S3_ACCESS_KEY"],
                              aws_secret_access_key=values["S3_SECRET_KEY"])
        keys = [item["Key"] for item in bucket.list_objects_v2(Bucket="mlflow").get("Contents", [])]
        assert any(key.endswith(f"{results[0].run_id}/artifacts/scaler/scaler.skops") for key in keys), keys
        assert any(key.endswith("/MLmodel") for key in keys), keys
        server = engine.container_of(project, "mlflow")
        assert engine.run("exec", server, "find", "/data/artifacts", "-type", "f").stdout.strip() == ""
        # The secrets reach MLflow from its environment, never its command line.
        command_line = engine.run("exec", server, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline").stdout
        assert "s3://mlflow/artifacts" in command_line and "--app-name basic-auth" in command_line
        assert not any(value in command_line for value in values.values())
        assert published_ports(engine, project) == {"mlflow": [f"127.0.0.1:{env['MLFLOW_PORT']}"],
                                                   "seaweedfs": [f"127.0.0.1:{env['S3_PORT']}"]}
    finally:
        engine.compose_run(project, *files, "down", "-v", env=env, check=False, timeout=300)
        engine.run("network", "rm", f"{project}_default", check=False)
        engine.run("rmi", "--no-prune", "-f", env["SEAWEEDFS_IMAGE"], check=False)
