"""The shipped artefacts, for real: the compose MLflow server and the containerized service."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
from urllib.parse import urlparse

import httpx
import mlflow
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.container.conftest import ComposeStack, Engine, published_ports, wait_for_container
from tests.servers import forget_mlflow_uris
from training.config import get_settings
from training.data import load_dataset, split_dataset
from tests.conftest import lr_grid
from training.promote import promote_best
from training.sweep import run_experiments

pytestmark = pytest.mark.container

MODEL_NAME = "ClassificationModel"
POSTGRES_OVERRIDE = REPO_ROOT / "docker-compose.postgres.yml"
HANG_GUARD = 60  # seconds; only keeps a broken service from hanging a test


def _registry(stack: ComposeStack) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


def _exec(engine: Engine, container: str, *command: str) -> str:
    return engine.run("exec", container, *command).stdout.strip()


def test_compose_mlflow_keeps_runs_and_artifacts_behind_the_server(engine, compose_stack, trained):
    client = _registry(compose_stack)
    production = client.get_model_version_by_alias(MODEL_NAME, "production")
    assert str(production.version) == trained.version
    assert production.current_stage == "Production"
    assert trained.import_output.strip().splitlines()[-1].startswith(f"imported {trained.bento_tag} ")

    experiment = client.get_experiment_by_name("classification")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6 and len(runs) == 7
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)

    # The files are in the container's volume, proxied there by the server...
    container = engine.container_of(compose_stack.project, "mlflow")
    stored = _exec(engine, container, "find", "/data/artifacts", "-name", "scaler.skops").split()
    assert sorted(stored) == sorted(f"/data/artifacts/{experiment.experiment_id}/{r.info.run_id}"
                                    f"/artifacts/scaler/scaler.skops" for r in children)
    assert len(_exec(engine, container, "find", "/data/artifacts", "-name", "MLmodel").split()) == 6
    assert _exec(engine, container, "sh", "-c", "test -s /data/mlflow.db && echo present") == "present"
    # ...and nowhere on the client's side.
    assert not any((trained.workdir / name).exists() for name in ("mlartifacts", "mlruns"))
    assert _exec(engine, container, "id", "-u") != "0"


def test_containerized_service_serves_the_imported_production_model(engine, compose_stack, trained,
                                                                      service_container):
    health = httpx.get(f"{service_container.url}/health", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    model = body["model"]
    dataset = load_dataset("iris")
    assert model["name"] == MODEL_NAME
    assert str(model["version"]) == trained.version
    assert model["run_id"] == trained.run_id
    assert model["dataset"] == "iris"
    assert model["features"] == dataset.feature_names
    assert model["classes"] == dataset.class_names
    run = _registry(compose_stack).get_run(trained.run_id)
    assert {k: model["metrics"][k] for k in ("accuracy", "precision", "recall", "f1")} == pytest.approx(
        {k: run.data.metrics[k] for k in ("accuracy", "precision", "recall", "f1")}, abs=1e-12)

    # The answers are the registry's production pipeline's, label for label.
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    response = httpx.post(f"{service_container.url}/predict",
                          json={"features": split.X_test.to_numpy().tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"]["name"] == MODEL_NAME and str(answer["model"]["version"]) == trained.version
    mlflow.set_tracking_uri(compose_stack.mlflow_url)
    mlflow.set_registry_uri(compose_stack.mlflow_url)
    try:
        pipeline = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@production")
    finally:
        forget_mlflow_uris()
    frame = split.X_test
    expected = pipeline.predict(frame)
    predictions = answer["predictions"]
    assert [p["class_index"] for p in predictions] == expected.tolist()
    assert [p["label"] for p in predictions] == [dataset.class_names[i] for i in expected]
    # Probabilities come keyed by class name, in the model's class order.
    served = [[p["probabilities"][name] for name in dataset.class_names] for p in predictions]
    np.testing.assert_allclose(served, pipeline.predict_proba(frame), rtol=0, atol=1e-9)

    assert _exec(engine, service_container.name, "id", "-u") != "0"


def _stalled(url: str, api_key: str) -> socket.socket:
    """A connection whose authorized request announces a 100-byte body and sends 12 bytes of it."""
    address = urlparse(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=HANG_GUARD)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + api_key.encode() + b"\r\n"
                 b"Content-Length: 100\r\n\r\n{\"features\":")
    return sock


def test_compose_service_passes_the_service_settings_through_from_the_shell(engine, compose_stack,
                                                                             service_image):
    """API_KEY, MAX_ROWS, MAX_BODY_BYTES, REQUEST_TIMEOUT and MODEL_THREADS set in compose's
    environment reach the service: each limit answers with its own sentence, naming the value set;
    /health names the threads of a tree form (a linear one uses one)."""
    port = free_port()
    key, max_rows, max_body_bytes, request_timeout = "compose-test-key", 3, 1500, 1
    env = {**compose_stack.env, "SERVICE_IMAGE": service_image, "SERVICE_PORT": str(port),
           "API_KEY": key, "MAX_ROWS": str(max_rows), "MAX_BODY_BYTES": str(max_body_bytes),
           "REQUEST_TIMEOUT": str(request_timeout), "MODEL_THREADS": "3"}
    engine.compose_run(compose_stack.project, "up", "-d", "--no-deps", "service", env=env)
    container = engine.container_of(compose_stack.project, "service")
    url = f"http://127.0.0.1:{port}"
    wait_for_container(engine, container, f"{url}/readyz")
    auth = {"Authorization": f"Bearer {key}"}
    row = [5.1, 3.5, 1.4, 0.2]
    with httpx.Client(timeout=HANG_GUARD) as client:
        refused = client.post(f"{url}/predict", json={"features": [row]})
        assert (refused.status_code, refused.json()) == (
            401, {"error": "a valid 'Authorization: Bearer <API key>' header is required"})
        allowed = client.post(f"{url}/predict", json={"features": [row] * max_rows}, headers=auth)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["predictions"][0]["label"] == "setosa"
        model = client.get(f"{url}/health").json()["model"]
        assert model["threads"] == (3 if model["served_form"] in ("onnx", "compiled") else 1)

        too_many = client.post(f"{url}/predict", json={"features": [row] * (max_rows + 1)}, headers=auth)
        assert (too_many.status_code, too_many.json()) == (
            422, {"error": f"{max_rows + 1} rows is more than the limit of {max_rows} per request"})
        body = b'{"features": [' + b", ".join([b"[5.1, 3.5, 1.4, 0.2]"] * 100) + b"]}"
        assert len(body) > max_body_bytes
        too_large = client.post(f"{url}/predict", content=body,
                                headers={**auth, "content-type": "application/json"})
        assert (too_large.status_code, too_large.json()) == (
            413, {"error": f"the body is larger than the limit of {max_body_bytes} bytes"})
    with _stalled(url, key) as slow:
        answer = http.client.HTTPResponse(slow)
        answer.begin()
        assert (answer.status, json.loads(answer.read())) == (
            408, {"error": f"the body did not arrive within {request_timeout} s"})

    # Published on 127.0.0.1 only, as every port of the compose file.
    assert published_ports(engine, compose_stack.project) == {
        "mlflow": [f"127.0.0.1:{compose_stack.env['MLFLOW_PORT']}"], "service": [f"127.0.0.1:{port}"]}


def _mlflow_api(url: str, host: str) -> httpx.Response:
    """An MLflow REST call (host checks spare /health) sent with the given Host header."""
    return httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", headers={"Host": host},
                     timeout=30)


def test_compose_mlflow_accepts_only_the_host_names_it_knows(engine, compose_stack):
    url, port = compose_stack.mlflow_url, compose_stack.env["MLFLOW_PORT"]
    assert _mlflow_api(url, "evil.example").status_code == 403
    assert _mlflow_api(url, f"evil.example:{port}").status_code == 403
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "mlflow", "mlflow:5000"):
        response = _mlflow_api(url, host)
        assert response.status_code == 200, (host, response.text[:300])
    # Other containers of the project reach it as http://mlflow:5000.
    container = engine.container_of(compose_stack.project, "mlflow")
    assert published_ports(engine, compose_stack.project)["mlflow"] == [f"127.0.0.1:{port}"]
    probe = ("import urllib.request; print(urllib.request.urlopen("
             "'http://mlflow:5000/api/2.0/mlflow/registered-models/search', timeout=10).status)")
    assert _exec(engine, container, "python", "-c", probe) == "200"


def test_mlflow_allowed_hosts_on_the_service_replaces_the_default_names(engine, compose_stack, tmp_path):
    """MLFLOW_ALLOWED_HOSTS set on the `mlflow` service (an override file, as a user would add)
    lets the new name in, and is the whole list: localhost and mlflow are then refused."""
    override = tmp_path / "docker-compose.hosts.yml"
    override.write_text('services:\n  mlflow:\n    environment:\n'
                        '      MLFLOW_ALLOWED_HOSTS: "models.example.internal,models.example.internal:*"\n')
    project = f"{compose_stack.project}hosts"
    files = ("-f", str(override))
    port = str(free_port())
    env = {**compose_stack.env, "MLFLOW_PORT": port}
    url = f"http://127.0.0.1:{port}"
    try:
        engine.compose_run(project, *files, "up", "-d", "mlflow", env=env)
        wait_for_container(engine, engine.container_of(project, "mlflow"), f"{url}/health")
        for host in ("models.example.internal", f"models.example.internal:{port}"):
            response = _mlflow_api(url, host)
            assert response.status_code == 200, (host, response.text[:300])
        for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "mlflow:5000", "evil.example"):
            assert _mlflow_api(url, host).status_code == 403, host
        # /health is spared, so the compose healthcheck keeps working.
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        assert published_ports(engine, project) == {"mlflow": [f"127.0.0.1:{port}"]}
    finally:
        engine.compose_run(project, *files, "down", "-v", env=env, check=False, timeout=300)
        engine.run("network", "rm", f"{project}_default", check=False)


def test_postgres_override_needs_a_password_and_keeps_the_registry_in_postgresql(
        engine, compose_stack, postgres_image, tmp_path, monkeypatch):
    project = f"{compose_stack.project}pg"
    files = ("-f", str(POSTGRES_OVERRIDE))
    env = {**compose_stack.env, "MLFLOW_PORT": str(free_port()), "POSTGRES_IMAGE": postgres_image}
    env.pop("POSTGRES_PASSWORD", None)
    refused = engine.compose_run(project, *files, "up", "-d", "mlflow", "postgres", env=env, check=False)
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD" in refused.stdout + refused.stderr
    assert engine.run("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout == ""

    password = secrets.token_hex(12)
    env["POSTGRES_PASSWORD"] = password
    url = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    try:
        engine.compose_run(project, *files, "up", "-d", "mlflow", "postgres", env=env)
        wait_for_container(engine, engine.container_of(project, "mlflow"), f"{url}/health")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", url)
        get_settings.cache_clear()
        try:
            results = run_experiments(dataset_name="iris", grid=lr_grid([1.0], ["l2"]))
            promoted = promote_best()
        finally:
            forget_mlflow_uris()
        assert promoted.version == results[0].version == "1"

        database = engine.container_of(project, "postgres")

        def sql(query: str) -> str:
            return _exec(engine, database, "psql", "-U", "mlflow", "-d", "mlflow", "-tAc", query)

        assert sql("SELECT count(*) FROM runs") == "2"
        assert sql("SELECT name, version FROM registered_model_aliases") == f"{MODEL_NAME}|1"
        server = engine.container_of(project, "mlflow")
        assert _exec(engine, server, "find", "/data/artifacts", "-name", "scaler.skops") != ""
        assert _exec(engine, server, "sh", "-c", "ls /data/mlflow.db 2>/dev/null || true") == ""
        # The password reaches libpq from the environment, never the server's command line.
        command_line = _exec(engine, server, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline")
        assert "postgresql+psycopg2://mlflow@postgres:5432/mlflow" in command_line
        assert password not in command_line
        assert not (tmp_path / "mlartifacts").exists()
        # Only MLflow is published, on 127.0.0.1; PostgreSQL is reachable inside the project only.
        assert published_ports(engine, project) == {"mlflow": [f"127.0.0.1:{env['MLFLOW_PORT']}"],
                                                   "postgres": []}
    finally:
        engine.compose_run(project, *files, "down", "-v", env=env, check=False, timeout=300)
        engine.run("network", "rm", f"{project}_default", check=False)
