"""The compose files as text, without an engine: every published port is on 127.0.0.1."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

COMPOSE_FILES = sorted(REPO_ROOT.glob("docker-compose*.yml"))


def _published(path) -> list[tuple[str, object]]:
    """(service, ports entry) for every `ports:` entry of a compose file."""
    services = (yaml.safe_load(path.read_text()) or {}).get("services") or {}
    return [(name, entry) for name, service in services.items()
            for entry in (service or {}).get("ports") or []]


def _with_defaults(text: str) -> str:
    """Compose's ${NAME:-default} and ${NAME-default} as their defaults (unset variables)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", text)


def _host_ip(entry: object) -> str | None:
    """The host address of a short ("IP:HOST:CONTAINER") or long ({host_ip: ...}) ports entry."""
    if isinstance(entry, dict):
        return entry.get("host_ip")
    parts = _with_defaults(str(entry)).split(":")
    return parts[0] if len(parts) == 3 else None  # "HOST:CONTAINER" or "CONTAINER": every address


def test_the_compose_files_are_the_ones_the_readme_names():
    names = {path.name for path in COMPOSE_FILES}
    assert {"docker-compose.yml", "docker-compose.postgres.yml", "docker-compose.lb.yml",
            "docker-compose.monitoring.yml", "docker-compose.s3.yml"} <= names


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_every_published_port_is_on_127_0_0_1(path):
    unbound = [(service, entry) for service, entry in _published(path) if _host_ip(entry) != "127.0.0.1"]
    assert unbound == [], f"{path.name} publishes beyond 127.0.0.1: {unbound}"


def test_the_ports_the_readme_names_are_published():
    """MLFLOW_PORT and SERVICE_PORT (docker-compose.yml), LB_PORT (the balancer), PROMETHEUS_PORT and S3_PORT move them."""
    published = {(path.name, service): str(entry) for path in COMPOSE_FILES
                 for service, entry in _published(path)}
    assert published[("docker-compose.yml", "mlflow")] == "127.0.0.1:${MLFLOW_PORT:-5000}:5000"
    assert published[("docker-compose.yml", "service")] == "127.0.0.1:${SERVICE_PORT:-3000}:3000"
    assert published[("docker-compose.lb.yml", "lb")] == "127.0.0.1:${LB_PORT:-8080}:8080"
    assert published[("docker-compose.monitoring.yml", "prometheus")] == "127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"
    assert not any(service == "postgres" for _, service in published)
    assert published[("docker-compose.s3.yml", "seaweedfs")] == "127.0.0.1:${S3_PORT:-8333}:8333"


def test_the_monitoring_override_builds_prometheus_from_the_shipped_config_and_rules():
    """Its image is built from deploy/prometheus, which holds the config, the rules and their tests."""
    override = yaml.safe_load((REPO_ROOT / "docker-compose.monitoring.yml").read_text())
    (name,) = override["services"]
    context = REPO_ROOT / override["services"][name]["build"]
    dockerfile = (context / "Dockerfile").read_text()
    for shipped in ("prometheus.yml", "alerts.yml", "alerts.test.yml"):
        assert (context / shipped).is_file() and shipped in dockerfile
    assert "promtool test rules alerts.test.yml" in dockerfile


S3_OVERRIDE = REPO_ROOT / "docker-compose.s3.yml"
# Each secret of the S3 override, and what it is in the containers.
S3_SECRETS = {"S3_ACCESS_KEY": ("seaweedfs", "S3_ACCESS_KEY"), "S3_SECRET_KEY": ("seaweedfs", "S3_SECRET_KEY"),
              "MLFLOW_ADMIN_PASSWORD": ("mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD"),
              "MLFLOW_FLASK_SERVER_SECRET_KEY": ("mlflow", "MLFLOW_FLASK_SERVER_SECRET_KEY")}


def test_the_s3_override_takes_every_secret_from_the_environment_and_requires_it():
    services = yaml.safe_load(S3_OVERRIDE.read_text())["services"]
    for variable, (service, name) in S3_SECRETS.items():
        assert services[service]["environment"][name] == f"${{{variable}:?set {variable}}}"
    assert services["mlflow"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
    # No value that looks like a credential is written in the file itself.
    for service in services.values():
        for name, value in (service.get("environment") or {}).items():
            if any(word in name for word in ("SECRET", "PASSWORD", "ACCESS_KEY")):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (name, value)


def test_the_s3_override_points_mlflow_at_the_bucket_with_basic_auth():
    mlflow = yaml.safe_load(S3_OVERRIDE.read_text())["services"]["mlflow"]["environment"]
    assert mlflow["ARTIFACTS_DESTINATION"] == "s3://${S3_BUCKET:-mlflow}/artifacts"
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert mlflow["MLFLOW_APP_NAME"] == "basic-auth"
    dockerfile = (REPO_ROOT / "docker" / "mlflow" / "Dockerfile").read_text()
    # The image reads those variables, and has what they need (boto3, the auth app's extra).
    assert '--artifacts-destination \\"${ARTIFACTS_DESTINATION:-/data/artifacts}\\"' in dockerfile
    assert '${MLFLOW_APP_NAME:+--app-name' in dockerfile
    assert "boto3==" in dockerfile and "mlflow[auth]==" in dockerfile


def test_every_replica_passes_the_service_settings_through_from_the_shell():
    """The limits, the API key and the model's threads (set 1 when replicas share the cores)."""
    passed = {"API_KEY", "MAX_ROWS", "MAX_BODY_BYTES", "REQUEST_TIMEOUT", "MODEL_THREADS"}
    for name, service in (("docker-compose.yml", "service"), ("docker-compose.lb.yml", "service-2")):
        environment = yaml.safe_load((REPO_ROOT / name).read_text())["services"][service]["environment"]
        assert passed <= set(environment), f"{name} {service} does not pass {sorted(passed - set(environment))}"
