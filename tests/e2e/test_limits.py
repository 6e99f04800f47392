"""Request limits are settings: rows, body bytes and the time a body may take to arrive."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlparse

import httpx
import pytest

from tests.e2e import hostile
from tests.e2e.conftest import start_server
from tests.servers import stop_process_group
from serving.settings import get_settings

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]
REQUEST_TIMEOUT = 1  # seconds, the `limited` server's; its default is 10
HANG_GUARD = 60  # seconds; only keeps a broken server from hanging the test


@pytest.fixture(scope="module")
def limited(served):
    server = start_server(home=served.bentoml_home,
                          env={"MAX_ROWS": "5", "MAX_BODY_BYTES": "2000",
                               "REQUEST_TIMEOUT": str(REQUEST_TIMEOUT)})
    yield server
    stop_process_group(server.process)


def test_row_limit_comes_from_max_rows(limited):
    assert httpx.post(f"{limited.url}/predict", json={"features": [ROW] * 5}).status_code == 200
    response = httpx.post(f"{limited.url}/predict", json={"features": [ROW] * 6})
    assert response.status_code == 422 and "limit of 5" in response.json()["error"]


def test_body_over_max_body_bytes_is_413(limited):
    body = b'{"features": [' + b", ".join([b"[5.1, 3.5, 1.4, 0.2]"] * 100) + b"]}"
    response = httpx.post(f"{limited.url}/predict", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413 and "2000 bytes" in response.json()["error"]


def test_chunked_body_over_the_limit_is_413(limited):
    def chunks():
        for _ in range(100):
            yield b" " * 100
    response = httpx.post(f"{limited.url}/predict", content=chunks(),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413


def _stalled(url: str) -> socket.socket:
    """A connection whose request announces a 100-byte body and sends 12 bytes of it."""
    address = urlparse(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=HANG_GUARD)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"features\":")
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict]:
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer.status, json.loads(answer.read())


def test_a_body_that_never_arrives_is_408_and_frees_the_worker(served, limited):
    """The body deadline is REQUEST_TIMEOUT: the `limited` server answers 408 naming its 1 s, the
    `served` one (the default) names 10 s; each is counted once under `timeout`; the single worker
    then serves the next request. Nothing is timed."""
    timeouts = {server.url: hostile.rejected(server.url, "timeout") for server in (served, limited)}
    with _stalled(served.url) as default_deadline, _stalled(limited.url) as short_deadline:
        assert _answer(short_deadline) == (408, {"error": f"the body did not arrive within {REQUEST_TIMEOUT} s"})
        default = f"{get_settings().request_timeout:g}"  # the served server's: 10 unless set
        assert _answer(default_deadline) == (408, {"error": f"the body did not arrive within {default} s"})
    for server in (served, limited):
        assert hostile.rejected(server.url, "timeout") == timeouts[server.url] + 1
        assert httpx.post(f"{server.url}/predict", json={"features": [ROW]}).status_code == 200


@pytest.mark.parametrize("bad, route", hostile.cases("limited"))
def test_every_post_route_enforces_the_limits(limited, bad, route):
    """The limit faults of the hostile table (tests/e2e/hostile.py) on every POST route."""
    hostile.assert_refused_and_counted(limited.url, bad, route)
