"""Request limits are settings: rows, body bytes and the time a body may take to arrive."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.e2e import hostile
from tests.e2e.conftest import start_server
from tests.servers import stop_process_group

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def limited(served):
    server = start_server(home=served.bentoml_home,
                          env={"MAX_ROWS": "5", "MAX_BODY_BYTES": "2000", "REQUEST_TIMEOUT": "1"})
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


def test_a_body_that_never_arrives_is_408_and_frees_the_worker(limited):
    address = urlparse(limited.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"features\":")
        started = time.monotonic()
        answer = sock.recv(4096)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.5 < waited < 5
    assert httpx.post(f"{limited.url}/predict", json={"features": [ROW]}).status_code == 200


@pytest.mark.parametrize("bad, route", hostile.cases("limited"))
def test_every_post_route_enforces_the_limits(limited, bad, route):
    """The limit faults of the hostile table (tests/e2e/hostile.py) on every POST route."""
    answer = hostile.send(limited.url, bad, route)
    hostile.assert_refused(answer, bad, route, url=limited.url)
    assert hostile.valid_request(limited.url, route).status_code == 200  # the worker is free again
