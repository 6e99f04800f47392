"""The images themselves: the tag `make containerize` gives, the users they run as, and the
service image answering exactly as `bentoml serve` does for the same model."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import mlflow
import pytest

from tests.container.conftest import (IMAGE_REPOSITORY, ComposeStack, Engine, RunningService,
                                      ServiceImage, Trained, image_id)
from tests.e2e.conftest import Server, start_server
from tests.servers import forget_mlflow_uris, stop_process_group
from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.container

MODEL_NAME = "ClassificationModel"


def _exec(engine: Engine, container: str, *command: str) -> str:
    return engine.run("exec", container, *command).stdout.strip()


def _process_uids(engine: Engine, container: str) -> set[str]:
    """The real uid of every process in the container (the server's and its workers')."""
    script = 'for s in /proc/[0-9]*/status; do sed -n "s/^Uid:[[:space:]]*\\([0-9]*\\).*/\\1/p" "$s"; done'
    return set(_exec(engine, container, "sh", "-c", script).split())


def _user(engine: Engine, container: str) -> tuple[str, str, set[str]]:
    """(user name, uid) of the container's user, and the uids its processes run as."""
    return (_exec(engine, container, "id", "-un"), _exec(engine, container, "id", "-u"),
            _process_uids(engine, container))


def test_make_containerize_tags_the_image_with_the_model_it_holds_and_as_latest(
        engine, containerized: ServiceImage, trained: Trained, service_container: RunningService):
    """`make containerize` names the image classification_service:v<version>-<run id> of the
    model inside it, and :latest is that same image."""
    model = httpx.get(f"{service_container.url}/metadata", timeout=10).json()
    # The model the running image serves is the registry's production version...
    assert (str(model["version"]), model["run_id"]) == (trained.version, trained.run_id)
    # ...and the image carries its tag, as the Makefile writes it.
    expected = f"{IMAGE_REPOSITORY}:v{model['version']}-{model['run_id'][:12]}"
    assert image_id(engine, expected) == containerized.image_id, \
        f"no image {expected}; make printed:\n{containerized.output[-3000:]}"
    assert containerized.latest_id == containerized.image_id


def test_make_containerize_prints_no_warnings(containerized: ServiceImage):
    """A normal build is quiet: no Python or click warnings (bentoml's doubled --quiet among them)."""
    # Lines "INFO: ..." are the engine's build log, which bentoml containerize relays line by line:
    # what the image's own tools say there (the local base image's uv, useradd) is not our commands'.
    ours = [line for line in containerized.output.splitlines() if not line.startswith("INFO: ")]
    warnings = [line for line in ours if re.search(r"Warning: |warning: ", line)]
    assert not warnings, "\n".join(warnings)


def test_the_service_image_runs_as_the_user_bentoml(engine, service_container: RunningService):
    name, uid, process_uids = _user(engine, service_container.name)
    assert name == "bentoml"
    assert uid != "0"
    assert process_uids == {uid}  # the server and its workers, not only `exec`'s shell
    assert _exec(engine, service_container.name, "getent", "passwd", uid).split(":")[0] == "bentoml"


def test_the_models_default_threads_are_the_cpus_the_container_may_use(engine, service_image: str):
    """MODEL_THREADS unset: a worker's model takes the container's CPU quota (--cpus, a Kubernetes
    limit), not the host's cores: 1 under the manifest's 1-CPU limit."""
    probe = ('cd "$BENTO_PATH/src" && exec python -c "import service; from serving.settings import get_settings, '
             'model_threads; print(model_threads(get_settings(), workers=service.WORKERS))"')
    threads = {cpus: engine.run("run", "--rm", f"--cpus={cpus}", "--entrypoint", "sh", service_image,
                                "-c", probe).stdout.strip().splitlines()[-1] for cpus in (1, 2)}
    assert threads == {1: "1", 2: "2"}


def test_the_mlflow_server_runs_as_uid_1000_mlflow(engine, compose_stack: ComposeStack):
    container = engine.container_of(compose_stack.project, "mlflow")
    name, uid, process_uids = _user(engine, container)
    assert (name, uid) == ("mlflow", "1000")
    assert process_uids == {"1000"}  # `mlflow server`, uvicorn and its workers
    command_line = _exec(engine, container, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline")
    assert "mlflow server" in command_line


@pytest.fixture(scope="module")
def bentoml_serve(trained: Trained) -> Iterator[Server]:
    """`bentoml serve` from the repo on the BentoML store the image was built from."""
    server = start_server(home=trained.bentoml_home, env={"BENTOML_DO_NOT_TRACK": "True"})
    yield server
    stop_process_group(server.process)


@pytest.fixture(scope="module")
def registry_answers(compose_stack: ComposeStack):
    """The test rows, and what the registry's production model (as MLflow loads it) predicts."""
    dataset = load_dataset("iris")
    frame = split_dataset(dataset, test_size=0.2, random_state=42).X_test
    mlflow.set_tracking_uri(compose_stack.mlflow_url)
    mlflow.set_registry_uri(compose_stack.mlflow_url)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@production")
        version = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "production")
    finally:
        forget_mlflow_uris()
    return frame, model.predict(frame).tolist(), version


def _same(path: str, image: RunningService, served: Server, method: str = "GET", **request):
    """The image's and `bentoml serve`'s answers to one request: same status, same JSON body."""
    with httpx.Client(timeout=30) as client:
        ours = client.request(method, f"{image.url}{path}", **request)
        theirs = client.request(method, f"{served.url}{path}", **request)
    assert ours.status_code == theirs.status_code == 200, (ours.text[:300], theirs.text[:300])
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.json() == theirs.json()
    return ours.json()


def test_the_image_answers_health_and_metadata_as_bentoml_serve_does(
        service_container, bentoml_serve, registry_answers, trained):
    _, _, version = registry_answers
    health = _same("/health", service_container, bentoml_serve)
    metadata = _same("/metadata", service_container, bentoml_serve)
    assert health["status"] == "ok" and health["model"] == metadata
    assert (metadata["name"], str(metadata["version"]), metadata["run_id"]) == (
        MODEL_NAME, str(version.version), version.run_id)
    assert metadata["bento_tag"] == trained.bento_tag


def test_the_image_answers_predict_as_bentoml_serve_does(service_container, bentoml_serve,
                                                         registry_answers):
    frame, expected, _ = registry_answers
    answer = _same("/predict", service_container, bentoml_serve, "POST",
                   json={"features": frame.to_numpy().tolist()})
    assert [p["class_index"] for p in answer["predictions"]] == expected


@pytest.mark.parametrize("encoding", ["dataframe_split", "text/csv"])
def test_the_image_answers_invocations_as_the_registry_model_and_bentoml_serve_do(
        service_container, bentoml_serve, registry_answers, encoding):
    frame, expected, _ = registry_answers
    if encoding == "text/csv":
        request = {"content": frame.to_csv(index=False).encode(),
                   "headers": {"content-type": "text/csv"}}
    else:
        request = {"json": {"dataframe_split": {"columns": list(frame.columns),
                                                "data": frame.to_numpy().tolist()}}}
    answer = _same("/invocations", service_container, bentoml_serve, "POST", **request)
    assert answer == {"predictions": expected}
