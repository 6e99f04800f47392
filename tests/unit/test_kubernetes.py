"""deploy/kubernetes/ as text, without a cluster: checked against the port, health routes, settings,
user and scrape job the repo and the installed BentoML really use, not against copies of them."""

from __future__ import annotations

import re
from importlib.metadata import distribution

import pytest
import yaml

from serving.routes import ROUTES
from serving.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
# Read by BentoML itself, not by serving/settings.py; docker-compose.yml sets it too.
BENTOML_VARIABLES = {"BENTOML_DO_NOT_TRACK"}


def _documents() -> dict[str, dict]:
    """Every manifest by kind, from every YAML document of deploy/kubernetes/ but the kustomization."""
    found: dict[str, dict] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] != "Kustomization":
                assert document["kind"] not in found, f"two {document['kind']}s"
                found[document["kind"]] = document
    return found


def _compose_service() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["service"]


def _compose_health_url() -> tuple[int, str]:
    """(port, path) the compose healthcheck of the service polls inside its container."""
    (port, path), = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(_compose_service()["healthcheck"]["test"]))
    return int(port), path


def _bentoml_source(relative: str) -> str:
    """A file of the installed bentoml package, as text (nothing of bentoml._internal is imported)."""
    return distribution("bentoml").locate_file(f"bentoml/_internal/{relative}").read_text()


def _bentoml_system_routes() -> set[str]:
    """The paths BentoML adds to every server (its health routes and /metrics)."""
    return set(re.findall(r'join_paths\(path_prefix, "(/\w+)"\)', _bentoml_source("server/base_app.py")))


def _container() -> dict:
    (container,) = _documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _container_port() -> int:
    (port,) = _container()["ports"]
    return port["containerPort"]


def _resolve_port(port: int | str) -> int | None:
    """A probe's or Service's port (a number or a port name) as the container's port it reaches; None: none."""
    return next((p["containerPort"] for p in _container()["ports"] if port in (p["name"], p["containerPort"])), None)


def _env() -> dict[str, dict]:
    return {entry["name"]: entry for entry in _container()["env"]}


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(_documents()) == {"Deployment", "Service", "PodDisruptionBudget"}


def test_the_container_port_is_the_one_the_image_serves_on():
    published = str(_compose_service()["ports"][0]).rsplit(":", 1)[1]
    assert _container_port() == int(published) == _compose_health_url()[0]


def test_the_probes_poll_bentomls_health_routes():
    container = _container()
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    # Ready means what the compose healthcheck waits for; alive is BentoML's liveness route.
    assert probes["readinessProbe"]["path"] == _compose_health_url()[1] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/livez"
    # BentoML answers them (our route table, answered first, must not take them over).
    ours = {route.path for route in ROUTES}
    for name, probe in probes.items():
        assert probe["path"] in _bentoml_system_routes() - ours, name
        assert _resolve_port(probe["port"]) == _container_port(), name


def test_every_variable_is_one_the_service_reads_and_each_value_is_accepted():
    aliases = {field.alias for field in Settings.model_fields.values()}
    env = _env()
    assert set(env) - aliases - BENTOML_VARIABLES == set()
    # Everything compose passes to the service can be set here too, with compose's value where it has one.
    compose = dict(item.partition("=")[::2] for item in _compose_service()["environment"])
    assert set(compose) <= set(env)
    assert {name: env[name]["value"] for name in compose if compose[name]} == \
           {name: value for name, value in compose.items() if value}
    Settings(**{name: entry["value"] for name, entry in env.items() if "value" in entry})


def test_the_api_key_comes_from_an_optional_secret_never_from_the_manifest():
    api_key = _env()["API_KEY"]
    assert "value" not in api_key
    assert api_key["valueFrom"]["secretKeyRef"]["optional"] is True


def test_a_rollout_never_has_fewer_ready_replicas_than_asked_for():
    deployment = _documents()["Deployment"]["spec"]
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    # A drain keeps one replica; with as many as replicas, no node could ever be drained.
    assert 1 <= _documents()["PodDisruptionBudget"]["spec"]["minAvailable"] < deployment["replicas"]


def test_a_new_pod_may_load_its_model_for_as_long_as_its_startup_probe_allows_before_the_rollout_fails():
    """The rollout is marked failed (old pods still serving) only after the startup probe has given up."""
    deployment = _documents()["Deployment"]["spec"]
    startup = _container()["startupProbe"]
    budget = startup["failureThreshold"] * (startup["periodSeconds"] + startup["timeoutSeconds"])
    assert budget + deployment["minReadySeconds"] < deployment["progressDeadlineSeconds"]


def test_a_stopping_pod_is_out_of_the_endpoints_before_sigterm_and_outlives_its_last_request():
    pod = _documents()["Deployment"]["spec"]["template"]["spec"]
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) > 0
    settings = Settings(**{name: entry["value"] for name, entry in _env().items() if "value" in entry})
    assert int(command[1]) + settings.request_timeout < pod["terminationGracePeriodSeconds"]


def test_the_service_and_the_budget_select_exactly_the_deployments_pods():
    documents = _documents()
    deployment = documents["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    assert documents["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]
    assert documents["PodDisruptionBudget"]["spec"]["selector"] == deployment["selector"]
    (port,) = documents["Service"]["spec"]["ports"]
    assert _resolve_port(port["targetPort"]) == _container_port()


def test_the_scrape_annotations_match_the_prometheus_job():
    annotations = _documents()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "classifier"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == job["metrics_path"]
    assert job["metrics_path"] in _bentoml_system_routes()
    assert int(annotations["prometheus.io/port"]) == job["dns_sd_configs"][0]["port"] == _container_port()


def test_the_pods_run_as_the_images_own_non_root_user():
    """The uid BentoML's generated Dockerfile gives its user `bentoml` (the image's USER)."""
    (uid,) = re.findall(r"^BENTO_UID_GID = (\d+)$", _bentoml_source("container/generate.py"), re.MULTILINE)
    context = _documents()["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == int(uid) != 0


def test_the_image_is_the_one_make_containerize_tags():
    from release.image import image_for

    repository, _, _ = image_for("classification_model:v1-abc").partition(":")
    name, tag = _container()["image"].rsplit("/", 1)[-1].split(":")
    assert name == repository
    assert tag.startswith("v") and tag != "latest"  # v<version>-<run>: a new tag rolls out, :latest would not
