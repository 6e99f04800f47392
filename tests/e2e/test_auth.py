"""Optional API key: every POST route needs it when API_KEY is set; probes, metadata and metrics stay open."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e import hostile
from tests.e2e.conftest import start_server
from tests.servers import stop_process_group

pytestmark = pytest.mark.e2e

KEY = "test-key-0123456789"
ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture(scope="module")
def keyed(served):
    server = start_server(home=served.bentoml_home, env={"API_KEY": KEY})
    yield server
    stop_process_group(server.process)


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", KEY, f"Bearer {KEY}x"])
def test_predict_without_the_right_key_is_401(keyed, header):
    headers = {"authorization": header} if header is not None else {}
    response = httpx.post(f"{keyed.url}/predict", json=ROW, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]


def test_predict_with_the_key_is_200(keyed):
    response = httpx.post(f"{keyed.url}/predict", json=ROW, headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"


OPEN_PATHS = ["/health", "/metadata", "/readyz", "/livez", "/ping", "/version", "/v2/health/live",
              "/v2/health/ready", "/v2", hostile.V2_MODEL_PATH, f"{hostile.V2_MODEL_PATH}/ready"]


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_probes_and_metadata_stay_open(served, keyed, path):
    """README "Security": with API_KEY set, these answer without a key, exactly what the same
    model's server without a key answers (the lineage, not a refusal)."""
    answer, open_answer = httpx.get(f"{keyed.url}{path}"), httpx.get(f"{served.url}{path}")
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-type"] == open_answer.headers["content-type"]
    assert answer.content == open_answer.content


def test_metadata_is_the_lineage_without_a_key(keyed):
    version = httpx.get(f"{keyed.url}/v2").json()["version"]  # also open: the served version
    metadata = httpx.get(f"{keyed.url}/metadata").json()
    assert metadata["name"] == "ClassificationModel" and metadata["version"] == version
    assert metadata["alias"] == "production" and metadata["sha256"]


def test_metrics_stay_open(keyed):
    response = httpx.get(f"{keyed.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "# TYPE " in response.text


@pytest.mark.parametrize("bad, route", hostile.cases("keyed"))
def test_every_post_route_needs_the_key(keyed, bad, route):
    """The API-key faults of the hostile table (tests/e2e/hostile.py) on every POST route."""
    hostile.assert_refused_and_counted(keyed.url, bad, route, headers={"authorization": f"Bearer {KEY}"})


def test_without_api_key_the_service_is_open(served):
    assert httpx.post(f"{served.url}/predict", json=ROW).status_code == 200
