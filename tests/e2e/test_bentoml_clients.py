"""`predict` is a real BentoML API: BentoML's clients call it, and the fast path ahead of
BentoML answers exactly what the declared API answers behind BentoML's whole stack."""

from __future__ import annotations

import asyncio
import json

import bentoml
import httpx
import pytest

from tests.e2e.conftest import start_server
from tests.servers import stop_process_group
from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.e2e

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def declared(served):
    """The same model served with FAST_PATH=false: BentoML's stack runs the declared API."""
    server = start_server(home=served.bentoml_home, env={"FAST_PATH": "false"})
    yield server
    stop_process_group(server.process)


@pytest.fixture(scope="module")
def rows() -> list[list[float]]:
    split = split_dataset(load_dataset("iris"), test_size=0.2, random_state=42)
    return split.X_test.to_numpy().tolist()


def test_schema_json_lists_predict_with_its_arguments(served):
    schema = httpx.get(f"{served.url}/schema.json").json()
    routes = {route["name"]: route for route in schema["routes"]}
    assert routes["predict"]["route"] == "/predict"
    assert set(routes["predict"]["input"]["properties"]) == {"features", "records"}


@pytest.mark.parametrize("server_name", ["served", "declared"])
def test_sync_and_async_clients_get_what_curl_gets(request, rows, server_name):
    server = request.getfixturevalue(server_name)
    expected = httpx.post(f"{server.url}/predict", json={"features": rows}).json()
    records = [dict(zip(FEATURES, row)) for row in rows]
    with bentoml.SyncHTTPClient(server.url) as client:
        assert client.predict(features=rows) == expected
        assert client.predict(records=records) == expected

    async def call_async():
        async with bentoml.AsyncHTTPClient(server.url) as client:
            return await client.predict(features=rows)

    assert asyncio.run(call_async()) == expected


CASES = [
    ("plain rows", json.dumps({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}), JSON),
    ("one flat row", json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}), JSON),
    ("records", json.dumps({"records": [dict(zip(FEATURES, [5.1, 3.5, None, 0.2]))]}), JSON),
    ("features and a null records", json.dumps({"features": [[5.1, 3.5, 1.4, 0.2]], "records": None}), JSON),
    ("empty body", "", JSON),
    ("malformed", "{", JSON),
    ("not an object", "[1, 2]", JSON),
    ("unknown key", json.dumps({"features": [[1, 2, 3, 4]], "x": 1}), JSON),
    ("both keys", json.dumps({"features": [[1, 2, 3, 4]], "records": [{}]}), JSON),
    ("duplicate keys", '{"features": [[1, 2, 3, 4]], "features": [[1, 2, 3, 4]]}', JSON),
    ("NaN literal", '{"features": [[NaN, 2, 3, 4]]}', JSON),
    ("short row", json.dumps({"features": [[1, 2, 3]]}), JSON),
    ("string value", json.dumps({"features": [[1, "2", 3, 4]]}), JSON),
    ("huge value", json.dumps({"features": [[1e300, 2, 3, 4]]}), JSON),
    ("missing column", json.dumps({"records": [{"sepal length (cm)": 1}]}), JSON),
    ("text in a numeric column", json.dumps({"records": [dict(zip(FEATURES, ["a", 1, 1, 1]))]}), JSON),
    ("wrong content type", json.dumps({"features": [[1, 2, 3, 4]]}), {"content-type": "text/plain"}),
    ("no content type", json.dumps({"features": [[1, 2, 3, 4]]}), {}),
]


@pytest.mark.parametrize("name, body, headers", CASES, ids=[c[0] for c in CASES])
def test_fast_path_answers_what_the_declared_api_answers(served, declared, name, body, headers):
    fast = httpx.post(f"{served.url}/predict", content=body.encode(), headers=headers)
    slow = httpx.post(f"{declared.url}/predict", content=body.encode(), headers=headers)
    assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"


def test_the_fast_path_really_is_ahead_of_bentoml(served, declared):
    """Fails loudly if a BentoML upgrade stops calling Service.to_asgi (README "Performance")."""
    body = {"features": [[5.1, 3.5, 1.4, 0.2]]}
    behind = httpx.post(f"{declared.url}/predict", json=body)
    ahead = httpx.post(f"{served.url}/predict", json=body)
    # BentoML's middleware stamps every answer it handles with a request id.
    assert "x-bentoml-request-id" in behind.headers
    assert "x-bentoml-request-id" not in ahead.headers, (
        "BentoML answered /predict itself: FastPathService.to_asgi is no longer used by this "
        "BentoML version; see service.py and README 'Performance'")


def test_get_on_predict_is_405_on_both(served, declared):
    for server in (served, declared):
        response = httpx.get(f"{server.url}/predict")
        assert response.status_code == 405 and response.json()["error"]
