"""Optional API key: every POST route needs it when API_KEY is set; probes, metadata and metrics stay open."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("path", [
    "/health", "/metadata", "/readyz", "/livez", "/metrics", "/ping", "/version",
    "/v2/health/live", "/v2/health/ready", "/v2", hostile.V2_MODEL_PATH, f"{hostile.V2_MODEL_PATH}/ready"])
def test_health_and_metrics_stay_open(keyed, path):
    assert httpx.get(f"{keyed.url}{path}").status_code == 200


@pytest.mark.parametrize("bad, route", hostile.cases("keyed"))
def test_every_post_route_needs_the_key(keyed, bad, route):
    """The API-key faults of the hostile table (tests/e2e/hostile.py) on every POST route."""
    answer = hostile.send(keyed.url, bad, route)
    hostile.assert_refused(answer, bad, route, url=keyed.url)
    assert "API key" in json.loads(answer.body)["error"]
    assert hostile.valid_request(keyed.url, route, headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_without_api_key_the_service_is_open(served):
    assert httpx.post(f"{served.url}/predict", json=ROW).status_code == 200
