"""Fixtures for the container tests: the engine, the compose stack, the service image.

Each slow step happens once per session: build and start the compose `mlflow` service, train,
promote and import against it, `bentoml build` + `bentoml containerize`, run the image.
Everything is torn down at the end. Without a usable podman or docker the tests are skipped
with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.servers import NotReady, forget_mlflow_uris, wait_for_http

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
BUILD_TIMEOUT = 900
RUN_TIMEOUT = 180
BASE_IMAGE = "python:3.11-slim"


@dataclass(frozen=True)
class Engine:
    """A usable container engine and the compose command that drives it."""

    name: str  # "podman" or "docker"
    compose: tuple[str, ...]

    def run(self, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the engine with args; raise with its output when check and it fails."""
        return _run([self.name, *args], timeout=timeout, check=check, env=env)

    def compose_run(self, project: str, *args: str, env: dict[str, str],
                    timeout: float = RUN_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        """Run a compose command on docker-compose.yml under the given project name."""
        return _run([*self.compose, "-p", project, "-f", str(COMPOSE_FILE), *args],
                    timeout=timeout, check=check, env=env, cwd=REPO_ROOT)

    def container_of(self, project: str, service: str) -> str:
        """The id of a compose service's (first) container; both composes label it so."""
        out = self.run("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                       "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        if not out:
            raise LookupError(f"no running container for service {service} of project {project}")
        return out[0]

    def logs(self, container: str) -> str:
        """The last lines a container printed, for failure messages."""
        proc = self.run("logs", "--tail", "40", container, check=False)
        return (proc.stdout + proc.stderr)[-4000:]


@dataclass(frozen=True)
class ComposeStack:
    """The compose project with its `mlflow` service up on a 127.0.0.1 port."""

    engine: Engine
    project: str
    mlflow_url: str
    env: dict[str, str]  # what compose was run with: ports and image names


@dataclass(frozen=True)
class Trained:
    """What experiments -> promote -> import left: the registry version and the Bento model."""

    version: str
    run_id: str
    bento_tag: str
    bentoml_home: Path
    workdir: Path  # the folder the commands ran in
    import_output: str


@dataclass(frozen=True)
class RunningService:
    """One container of the service image on a 127.0.0.1 port."""

    name: str
    url: str


def published_ports(engine: Engine, project: str) -> dict[str, list[str]]:
    """Every running container of a compose project, by service: the host addresses
    ("IP:PORT") its ports are published on, as the engine bound them (empty: none)."""
    ids = engine.run("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    published: dict[str, list[str]] = {}
    for info in json.loads(engine.run("inspect", *ids).stdout) if ids else []:
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        ports = info["NetworkSettings"].get("Ports") or {}
        published.setdefault(service, []).extend(
            f"{binding['HostIp']}:{binding['HostPort']}"
            for bindings in ports.values() for binding in bindings or [])
    return {service: sorted(addresses) for service, addresses in published.items()}


def _run(command: list[str], *, timeout: float, check: bool, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _usable(command: list[str]) -> tuple[bool, str]:
    if shutil.which(command[0]) is None:
        return False, f"{command[0]} is not installed"
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"`{' '.join(command)}` timed out"
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()
        return False, f"`{' '.join(command)}` failed: {first[0] if first else proc.returncode}"
    return True, ""


def find_engine() -> tuple[Engine | None, str]:
    """The engine named by CONTAINER_ENGINE, else podman or docker; or None and why not."""
    wanted = os.environ.get("CONTAINER_ENGINE")
    reasons = []
    for name in [wanted] if wanted else ["podman", "docker"]:
        ok, why = _usable([name, "info"])
        if not ok:
            reasons.append(why)
            continue
        compose = ("podman-compose",) if name == "podman" else ("docker", "compose")
        ok, why = _usable([*compose, "version"])
        if not ok:
            reasons.append(why)
            continue
        return Engine(name=name, compose=compose), ""
    return None, "; ".join(reasons)


@pytest.fixture(scope="package")
def engine() -> Engine:
    """podman or docker, with its compose; skip the container tests when there is none."""
    found, why = find_engine()
    if found is None:
        pytest.skip(f"no usable container engine ({why}); install Docker with compose, or Podman "
                    "with podman-compose and set CONTAINER_ENGINE=podman, to run them")
    # Both Dockerfiles (ours and BentoML's) start from it: without it nothing can be built.
    if found.run("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        pulled = found.run("pull", BASE_IMAGE, check=False, timeout=600)
        if pulled.returncode != 0:
            last = (pulled.stderr or pulled.stdout).strip().splitlines()
            pytest.skip(f"{found.name} has no {BASE_IMAGE} and cannot pull it "
                        f"({last[-1] if last else pulled.returncode}); pull or load that image "
                        "first to run them")
    return found


@pytest.fixture(scope="package")
def compose_stack(engine: Engine) -> Iterator[ComposeStack]:
    """`compose up -d mlflow` under a unique project name and port; `down -v` at the end."""
    suffix = uuid.uuid4().hex[:8]
    project = f"cltest{suffix}"
    port = free_port()
    image = f"classifier-mlflow-test:{suffix}"
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_IMAGE": image,
           "SERVICE_PORT": str(free_port())}
    url = f"http://127.0.0.1:{port}"
    try:
        built = engine.compose_run(project, "build", "mlflow", env=env, timeout=BUILD_TIMEOUT)
        # podman-compose 1.0.3 exits 0 when podman fails: check what it was meant to do.
        if engine.run("image", "inspect", image, check=False).returncode != 0:
            raise RuntimeError(f"compose build made no image {image}:\n{_tail(built)}")
        up = engine.compose_run(project, "up", "-d", "mlflow", env=env)
        try:
            container = engine.container_of(project, "mlflow")
        except LookupError as error:
            raise RuntimeError(f"{error}:\n{_tail(up)}") from None
        # Compose healthchecks do not gate anything under podman-compose: poll ourselves.
        wait_for_container(engine, container, f"{url}/health")
        yield ComposeStack(engine=engine, project=project, mlflow_url=url, env=env)
    finally:
        engine.compose_run(project, "down", "-v", env=env, check=False, timeout=300)
        # podman-compose 1.0.3 leaves the project's network behind.
        engine.run("network", "rm", f"{project}_default", check=False)
        # --no-prune keeps the layers as build cache: the next session's build takes seconds.
        engine.run("rmi", "--no-prune", image, check=False)


def _tail(proc: subprocess.CompletedProcess, chars: int = 3000) -> str:
    return (proc.stdout + proc.stderr)[-chars:]


@pytest.fixture(scope="package")
def trained(compose_stack: ComposeStack, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """experiments --promote, then the import script, all over HTTP against the compose MLflow."""
    from training.config import get_settings
    from training.experiments import main as experiments_main

    workdir = tmp_path_factory.mktemp("compose-chain")
    home = workdir / "bentoml"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(workdir)
        # mlflow.set_*_uri also write these variables: set them here so they are put back.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", compose_stack.mlflow_url)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", compose_stack.mlflow_url)
        monkeypatch.setenv("BENTOML_HOME", str(home))
        for name in ("REGISTERED_MODEL_NAME", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ARTIFACT_ROOT"):
            monkeypatch.delenv(name, raising=False)
        get_settings.cache_clear()
        try:
            assert experiments_main(["--dataset", "iris", "--promote"]) == 0
            proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "import_production.py")],
                                  cwd=workdir, env=dict(os.environ), capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=compose_stack.mlflow_url,
                                         registry_uri=compose_stack.mlflow_url)
            production = client.get_model_version_by_alias("ClassificationModel", "production")
        finally:
            forget_mlflow_uris()
            get_settings.cache_clear()
    version, run_id = str(production.version), production.run_id
    return Trained(version=version, run_id=run_id,
                   bento_tag=f"classification_model:v{version}-{run_id[:12]}",
                   bentoml_home=home, workdir=workdir, import_output=proc.stdout)


def bentoml_env(home: Path) -> dict[str, str]:
    """The environment for the bentoml CLI on the session's store."""
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}


IMAGE_REPOSITORY = "classification_service"  # the Makefile's `containerize` tags this name


@dataclass(frozen=True)
class ServiceImage:
    """What `make containerize` left in the engine: the image tagged with the model it holds."""

    tag: str  # classification_service:<the Bento model's version, v<registry version>-<run id>>
    image_id: str
    latest_id: str  # the id classification_service:latest had right after the make
    output: str  # everything make and bentoml printed


def image_id(engine: Engine, reference: str) -> str | None:
    """The full id of an image reference, or None when the engine has no such image."""
    proc = engine.run("image", "inspect", "--format", "{{.Id}}", reference, check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def make_command(target: str, **variables: str) -> list[str]:
    """`make TARGET VAR=...` with the venv this session runs in (-o: never reinstall it from here)."""
    venv = Path(sys.executable).parent.parent
    return ["make", "--no-print-directory", "-o", f"{venv}/.installed", target, f"VENV={venv}",
            f"PY={sys.executable}", *(f"{name}={value}" for name, value in variables.items())]


@pytest.fixture(scope="package")
def containerized(engine: Engine, trained: Trained) -> Iterator[ServiceImage]:
    """The README's `make containerize` (`bentoml build` + `bentoml containerize`, tagged
    v<version>-<run> and latest), run for real on the session's BentoML store.

    `classification_service:latest` is a name the make moves: whatever it named before is put
    back at the end (on a shared engine another session's make may move it meanwhile)."""
    if not (REPO_ROOT / "service.py").is_file():
        pytest.skip("service.py is not in the work tree yet: nothing to containerize")
    latest = f"{IMAGE_REPOSITORY}:latest"
    previous_latest = image_id(engine, latest)
    env = bentoml_env(trained.bentoml_home)
    command = make_command("containerize", BENTOML=str(Path(sys.executable).parent / "bentoml"), ENGINE=engine.name)
    tag = f"{IMAGE_REPOSITORY}:{trained.bento_tag.partition(':')[2]}"
    made = _run(command, cwd=REPO_ROOT, env=env, timeout=BUILD_TIMEOUT + 600, check=False)
    try:
        built, latest_id = image_id(engine, tag), image_id(engine, latest)
        if made.returncode != 0 or built is None:
            raise RuntimeError(f"`{' '.join(command)}` exited {made.returncode} and left no image "
                               f"{tag}:\n{_tail(made)}")
        yield ServiceImage(tag=tag, image_id=built, latest_id=latest_id or "",
                           output=made.stdout + made.stderr)
    finally:
        ours = image_id(engine, tag)
        if ours is not None and image_id(engine, latest) == ours:
            engine.run("untag", ours, latest, check=False)
        engine.run("rmi", "--no-prune", "-f", tag, check=False)
        if previous_latest and image_id(engine, latest) is None:
            engine.run("tag", previous_latest, latest, check=False)


@pytest.fixture(scope="package")
def service_image(containerized: ServiceImage) -> str:
    """The image `make containerize` built, by its model tag."""
    return containerized.tag


@pytest.fixture(scope="package")
def service_container(engine: Engine, service_image: str) -> Iterator[RunningService]:
    """The image run the way the README says, on a free 127.0.0.1 port; removed at the end."""
    name = f"cltest-service-{uuid.uuid4().hex[:8]}"
    port = free_port()
    engine.run("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:3000",
               "-e", "BENTOML_DO_NOT_TRACK=True", service_image)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_container(engine, name, f"{url}/readyz")
        yield RunningService(name=name, url=url)
    finally:
        engine.run("rm", "-f", name, check=False)


def compose_build_up(engine: Engine, project: str, files: tuple[str, ...], *, service: str, image: str,
                     env: dict[str, str], ready_url: str, up: tuple[str, ...] = ("up", "-d")) -> str:
    """Build service's image, run compose `up`, wait until ready_url answers 200; service's container."""
    built = engine.compose_run(project, *files, "build", service, env=env, timeout=BUILD_TIMEOUT)
    # podman-compose 1.0.3 exits 0 when podman fails: check what it was meant to do.
    if engine.run("image", "inspect", image, check=False).returncode != 0:
        raise RuntimeError(f"compose build made no image {image}:\n{_tail(built)}")
    started = engine.compose_run(project, *files, *up, env=env, timeout=BUILD_TIMEOUT)
    try:
        container = engine.container_of(project, service)
    except LookupError as error:
        raise RuntimeError(f"{error}:\n{_tail(started)}") from None
    wait_for_container(engine, container, ready_url)
    return container


def wait_for_container(engine: Engine, container: str, url: str) -> float:
    """Poll url until 200 while the container runs; fail with its logs otherwise."""

    def running() -> bool:
        proc = engine.run("inspect", "-f", "{{.State.Running}}", container, check=False)
        return proc.stdout.strip() == "true"

    try:
        return wait_for_http(url, timeout=RUN_TIMEOUT, alive=running, interval=1.0)
    except NotReady as error:
        raise NotReady(f"{error}\n--- {container} logs ---\n{engine.logs(container)}") from None


@pytest.fixture(scope="package")
def postgres_image(engine: Engine) -> Iterator[str]:
    """The test stand-in for the official postgres image (no registry to pull it from here)."""
    tag = f"classifier-test-postgres:{uuid.uuid4().hex[:8]}"
    engine.run("build", "-t", tag, str(Path(__file__).with_name("postgres")), timeout=BUILD_TIMEOUT)
    try:
        yield tag
    finally:
        engine.run("rmi", "--no-prune", "-f", tag, check=False)
