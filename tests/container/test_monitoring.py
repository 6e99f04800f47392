"""The monitoring override for real: docker-compose.monitoring.yml builds and runs Prometheus."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.container.conftest import Engine, compose_build_up, published_ports

pytestmark = pytest.mark.container

MONITORING_OVERRIDE = REPO_ROOT / "docker-compose.monitoring.yml"
FILES = ("-f", str(MONITORING_OVERRIDE))
# The shipped evaluation interval is 15 s: a bound for "eventually", not a measurement.
ALERT_TIMEOUT = 120.0


@dataclass(frozen=True)
class PrometheusStack:
    engine: Engine
    project: str
    url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def prometheus_stack(engine: Engine) -> Iterator[PrometheusStack]:
    """`compose -f docker-compose.yml -f docker-compose.monitoring.yml up -d prometheus`, alone in a
    project of its own (no replica to find); `down -v` at the end."""
    suffix = uuid.uuid4().hex[:8]
    project = f"clmon{suffix}"
    image = f"classifier-prometheus-test:{suffix}"
    port = free_port()
    env = {**os.environ, "PROMETHEUS_PORT": str(port), "PROMETHEUS_IMAGE": image,
           "MLFLOW_PORT": str(free_port()), "SERVICE_PORT": str(free_port())}
    url = f"http://127.0.0.1:{port}"
    try:
        compose_build_up(engine, project, FILES, service="prometheus", image=image, env=env,
                         ready_url=f"{url}/-/ready", up=("up", "-d", "prometheus"))
        yield PrometheusStack(engine, project, url, env)
    finally:
        engine.compose_run(project, *FILES, "down", "-v", env=env, check=False, timeout=300)
        engine.run("network", "rm", f"{project}_default", check=False)
        engine.run("rmi", "--no-prune", "-f", image, check=False)


def test_prometheus_runs_the_shipped_rules_on_127_0_0_1_as_non_root(prometheus_stack):
    engine, project = prometheus_stack.engine, prometheus_stack.project
    assert published_ports(engine, project) == {"prometheus": [f"127.0.0.1:{prometheus_stack.env['PROMETHEUS_PORT']}"]}
    container = engine.container_of(project, "prometheus")
    assert engine.run("exec", container, "id", "-u").stdout.strip() != "0"
    groups = httpx.get(f"{prometheus_stack.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {group["name"] for group in groups} == {"classifier-recording", "classifier-alerts"}
    assert all(rule["health"] in ("ok", "unknown") for group in groups for rule in group["rules"])


def test_without_any_replica_the_model_not_ready_alert_is_raised(prometheus_stack):
    """Nothing answers to `service` in this project: no replica has a ready model."""
    deadline = time.monotonic() + ALERT_TIMEOUT
    while True:
        alerts = httpx.get(f"{prometheus_stack.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        names = {alert["labels"]["alertname"] for alert in alerts}
        if "ClassifierModelNotReady" in names or time.monotonic() > deadline:
            break
        time.sleep(1.0)  # a poll, not a measured duration
    assert names == {"ClassifierModelNotReady"}
