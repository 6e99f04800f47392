"""The compose load balancer for real: docker-compose.lb.yml starts MLflow, two replicas and nginx."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.container.conftest import (IMAGE_REPOSITORY, ComposeStack, Engine, Trained, compose_build_up,
                                      image_id, make_command, published_ports)
from tests.balancer import Load

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
    images: list[str] = field(default_factory=list)  # made by tests, removed once the stack is down

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
    for name in ("API_KEY", "MAX_ROWS", "MAX_BODY_BYTES", "REQUEST_TIMEOUT", "MODEL_THREADS"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{port}"
    stack = LbStack(engine, project, url, env)
    try:
        # 200 from /health through the balancer: at least one replica is ready behind it.
        compose_build_up(engine, project, FILES, service="lb", image=lb_image, env=env, ready_url=f"{url}/health")
        yield stack
    finally:
        engine.compose_run(project, *FILES, "down", "-v", env=env, check=False, timeout=300)
        engine.run("network", "rm", f"{project}_default", check=False)
        engine.run("rmi", "--no-prune", "-f", lb_image, check=False)
        for image in stack.images:
            engine.run("rmi", "--no-prune", image, check=False)


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


def _upstreams(lb_stack: LbStack) -> list[str]:
    text = lb_stack.engine.run("exec", lb_stack.container("lb"), "cat", "/tmp/balancer/upstreams.conf").stdout
    return [line.split()[1] for line in text.splitlines() if line.startswith("server ")]


def _make_rollout(lb_stack: LbStack, compose_stack: ComposeStack, trained: Trained,
                  tmp_path: Path, *, make: bool = True) -> subprocess.CompletedProcess:
    """The README's `make rollout` (make=False: the `python scripts/rollout.py` it runs, whose exit code
    make cannot pass on) on the lb stack's project, against the session's registry, in a BentoML home
    of the test's own holding what the session imported (the rollout imports into it)."""
    home = tmp_path / "bentoml"
    if not home.exists():
        shutil.copytree(trained.bentoml_home / "models", home / "models", symlinks=True)
    command = make_command("rollout", ENGINE=lb_stack.engine.name, ROLLOUT_ARGS=f"--project {lb_stack.project}")
    if not make:
        command = [sys.executable, "scripts/rollout.py", "--engine", lb_stack.engine.name, "--project", lb_stack.project]
    env = {**lb_stack.env, "MLFLOW_TRACKING_URI": compose_stack.mlflow_url, "BENTOML_HOME": str(home),
           "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)


def test_make_rollout_takes_a_new_production_version_to_both_replicas_with_no_failed_request(
        lb_stack, compose_stack, trained, containerized, tmp_path):
    """The README's `make rollout` on the running balancer stack: the image of the new @production
    version is built, a spare of it verified, then each replica recreated from it, under 16 clients."""
    import mlflow

    engine = lb_stack.engine
    client = mlflow.MlflowClient(tracking_uri=compose_stack.mlflow_url, registry_uri=compose_stack.mlflow_url)
    versions = [v.version for v in client.search_model_versions("name = 'ClassificationModel'")]
    new = next(str(v) for v in sorted(versions, key=int) if str(v) != trained.version)
    client.set_registered_model_alias("ClassificationModel", "production", new)
    new_image = f"{IMAGE_REPOSITORY}:v{new}-{client.get_model_version('ClassificationModel', new).run_id[:12]}"
    assert image_id(engine, new_image) is None  # so that the rollout builds it
    try:
        with Load(lb_stack.url) as load:
            done = _make_rollout(lb_stack, compose_stack, trained, tmp_path)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        assert f"building {new_image}" in output, output[-2000:]
        assert not load.errors, f"{len(load.errors)} of {len(load.versions) + len(load.errors)} failed: {load.errors[:5]}"
        assert {trained.version, new} <= set(load.versions), set(load.versions)
        # Afterwards: both compose replicas run the new image, the balancer has exactly them, the spare is gone.
        with httpx.Client(timeout=30) as http:
            answers = {http.post(f"{lb_stack.url}/predict", json=ROW).json()["model"]["version"] for _ in range(40)}
        assert answers == {new}
        assert sorted(_upstreams(lb_stack)) == ["service-2:3000", "service:3000"]
        for service in ("service", "service-2"):
            assert engine.run("inspect", "-f", "{{.ImageName}}" if engine.name == "podman" else "{{.Config.Image}}",
                              lb_stack.container(service)).stdout.strip().endswith(new_image)
        assert engine.run("ps", "-a", "-q", "--filter", f"name={lb_stack.project}-rollout-").stdout.strip() == ""
        # Twice is harmless.
        again = _make_rollout(lb_stack, compose_stack, trained, tmp_path)
        assert again.returncode == 0 and f"every replica serves version {new} " in again.stdout, again.stdout[-2000:]
    finally:
        engine.run("rm", "-f", f"{lb_stack.project}-rollout-v{new}", check=False)
        latest = f"{IMAGE_REPOSITORY}:latest"
        if image_id(engine, new_image) is not None and image_id(engine, latest) == image_id(engine, new_image):
            engine.run("untag", new_image, latest, check=False)
            if containerized.latest_id:
                engine.run("tag", containerized.latest_id, latest, check=False)
        lb_stack.images.append(new_image)  # the replicas run it: `rmi -f` would remove them too


def test_make_rollout_of_an_image_serving_another_model_exits_3_and_changes_nothing(
        lb_stack, compose_stack, trained, containerized, tmp_path):
    """An image tagged for the new version but holding another model (a broken artifact on purpose):
    the spare fails verification, is removed, and the replicas keep answering, under 16 clients."""
    import mlflow

    engine = lb_stack.engine
    client = mlflow.MlflowClient(tracking_uri=compose_stack.mlflow_url, registry_uri=compose_stack.mlflow_url)
    with httpx.Client(timeout=30) as http:
        before = {http.post(f"{lb_stack.url}/predict", json=ROW).json()["model"]["version"] for _ in range(20)}
    versions = sorted((str(v.version) for v in client.search_model_versions("name = 'ClassificationModel'")), key=int)
    wrong = next(v for v in reversed(versions) if v not in before and v != trained.version)
    client.set_registered_model_alias("ClassificationModel", "production", wrong)
    image = f"{IMAGE_REPOSITORY}:v{wrong}-{client.get_model_version('ClassificationModel', wrong).run_id[:12]}"
    engine.run("tag", containerized.image_id, image)  # the session's image, holding version {trained.version}
    upstreams = _upstreams(lb_stack)
    try:
        with Load(lb_stack.url) as load:
            done = _make_rollout(lb_stack, compose_stack, trained, tmp_path, make=False)
        assert done.returncode == 3, (done.stdout + done.stderr)[-3000:]
        errors = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and f"serves classification_model:v{trained.version}-" in errors[0], done.stdout
        assert not load.errors, load.errors[:5]
        assert set(load.versions) == before
        assert _upstreams(lb_stack) == upstreams
        assert engine.run("ps", "-a", "-q", "--filter", f"name={lb_stack.project}-rollout-").stdout.strip() == ""
    finally:
        engine.run("untag", containerized.image_id, image, check=False)


def test_the_balancer_keeps_answering_when_a_replica_container_dies(lb_stack):
    engine = lb_stack.engine
    with httpx.Client(timeout=30) as client:
        engine.run("kill", lb_stack.container("service-2"))
        answers = [client.post(f"{lb_stack.url}/predict", json=ROW) for _ in range(20)]
    assert [r.status_code for r in answers] == [200] * 20, \
        [r.text for r in answers if r.status_code != 200]
    # The dead replica was tried and the request sent on to the live one, unseen by the client.
    assert any("," in r.headers["x-upstream"] for r in answers), [r.headers["x-upstream"] for r in answers]
