"""The compose load balancer for real: docker-compose.lb.yml starts MLflow, two replicas and nginx."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.container.conftest import ComposeStack, Engine, compose_build_up, published_ports

pytestmark = pytest.mark.container

LB_OVERRIDE = REPO_ROOT / "docker-compose.lb.yml"
FILES = ("-f", str(LB_OVERRIDE))
ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}
# Bounds for "eventually", so that a broken stack fails instead of hanging.
ATTEMPTS = 300


@dataclass(frozen=True)
class LbStack:
    engine: Engine
    project: str
    url: str
    env: dict[str, str]

    def container(self, service: str) -> str:
        return self.engine.container_of(self.project, service)


@pytest.fixture(scope="module")
def lb_stack(engine: Engine, compose_stack: ComposeStack, service_image: str) -> Iterator[LbStack]:
    """`compose -f docker-compose.yml -f docker-compose.lb.yml up -d`, as the README says, in a
    project of its own (its own MLflow and volume); `down -v` at the end."""
    project = f"{compose_stack.project}lb"
    lb_image = f"classifier-lb-test:{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**compose_stack.env, "MLFLOW_PORT": str(free_port()), "SERVICE_PORT": str(free_port()),
           "LB_PORT": str(port), "SERVICE_IMAGE": service_image, "LB_IMAGE": lb_image}
    for name in ("API_KEY", "MAX_ROWS", "MAX_BODY_BYTES", "REQUEST_TIMEOUT"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{port}"
    try:
        # 200 from /health through the balancer: at least one replica is ready behind it.
        compose_build_up(engine, project, FILES, service="lb", image=lb_image, env=env, ready_url=f"{url}/health")
        yield LbStack(engine, project, url, env)
    finally:
        engine.compose_run(project, *FILES, "down", "-v", env=env, check=False, timeout=300)
        engine.run("network", "rm", f"{project}_default", check=False)
        engine.run("rmi", "--no-prune", "-f", lb_image, check=False)


def _answered_by(response: httpx.Response) -> str:
    return response.headers["x-upstream"].split(",")[-1].strip()


def test_the_lb_override_starts_mlflow_two_replicas_and_the_balancer_on_one_port(lb_stack, trained):
    engine = lb_stack.engine
    for service in ("mlflow", "service", "service-2", "lb"):
        assert lb_stack.container(service)
    # The balancer publishes one port, on 127.0.0.1; the second replica publishes none; the
    # others keep docker-compose.yml's, on 127.0.0.1 too.
    assert published_ports(engine, lb_stack.project) == {
        "mlflow": [f"127.0.0.1:{lb_stack.env['MLFLOW_PORT']}"],
        "service": [f"127.0.0.1:{lb_stack.env['SERVICE_PORT']}"],
        "service-2": [], "lb": [f"127.0.0.1:{lb_stack.env['LB_PORT']}"]}
    assert engine.run("exec", lb_stack.container("lb"), "id", "-u").stdout.strip() != "0"

    health = httpx.get(f"{lb_stack.url}/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert str(health.json()["model"]["version"]) == trained.version
    assert health.headers["x-upstream"]

    # Both replicas answer /predict through it, once both are ready.
    seen: set[str] = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(ATTEMPTS):
            response = client.post(f"{lb_stack.url}/predict", json=ROW)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["label"] == "setosa"
            seen.add(_answered_by(response))
            if len(seen) == 2:
                break
    assert len(seen) == 2, f"only {seen} answered in {ATTEMPTS} requests"


def test_prometheus_of_the_monitoring_override_scrapes_both_replicas(lb_stack):
    """docker-compose.monitoring.yml added to the running stack finds `service` and `service-2` by name."""
    engine, suffix = lb_stack.engine, uuid.uuid4().hex[:8]
    files = (*FILES, "-f", str(REPO_ROOT / "docker-compose.monitoring.yml"))
    port, image = free_port(), f"classifier-prometheus-test:{suffix}"
    env = {**lb_stack.env, "PROMETHEUS_PORT": str(port), "PROMETHEUS_IMAGE": image}
    url = f"http://127.0.0.1:{port}"
    try:
        compose_build_up(engine, lb_stack.project, files, service="prometheus", image=image, env=env,
                         ready_url=f"{url}/-/ready", up=("up", "-d", "prometheus"))
        for _ in range(ATTEMPTS):  # DNS discovery and the first scrapes take up to 30 s (15 s each)
            up = httpx.get(f"{url}/api/v1/query", params={"query": 'up{job="classifier"}'}, timeout=10).json()
            answering = [result for result in up["data"]["result"] if result["value"][1] == "1"]
            if len(answering) == 2:
                break
            time.sleep(1.0)  # a poll, not a measured duration
        assert len(answering) == 2, up
    finally:
        engine.run("rm", "-f", lb_stack.container("prometheus"), check=False)
        engine.run("rmi", "--no-prune", "-f", image, check=False)


def test_the_balancer_keeps_answering_when_a_replica_container_dies(lb_stack):
    engine = lb_stack.engine
    with httpx.Client(timeout=30) as client:
        engine.run("kill", lb_stack.container("service-2"))
        answers = [client.post(f"{lb_stack.url}/predict", json=ROW) for _ in range(20)]
    assert [r.status_code for r in answers] == [200] * 20, \
        [r.text for r in answers if r.status_code != 200]
    # The dead replica was tried and the request sent on to the live one, unseen by the client.
    assert any("," in r.headers["x-upstream"] for r in answers), [r.headers["x-upstream"] for r in answers]
