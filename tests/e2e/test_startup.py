"""Start-up and stop of a real `bentoml serve`: requests that arrive while the model loads, a port
that another process takes before the server binds it, and nothing left running after a stop."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

import tests.processes
from serving.model import HOLD_ENV
from tests.e2e.conftest import launch_server, start_server
from tests.servers import (NotReady, PortTaken, fixed_page, port_was_taken, running_http_server, start_on_free_port,
                           stop_process_group)

pytestmark = pytest.mark.e2e

HANG_GUARD = 120  # seconds; only keeps a broken server from hanging the test


def _held(home: Path, hold: Path) -> tuple[subprocess.Popen, int]:
    """`bentoml serve` whose worker is holding the model load (serving.model.hold_load); its port."""
    def start(port: int) -> tuple[subprocess.Popen, int]:
        process, log = launch_server(home=home, port=port, env={HOLD_ENV: str(hold)})
        give_up = time.monotonic() + HANG_GUARD
        while not (hold / "holding").exists():
            if process.poll() is not None:
                stop_process_group(process)
                if port_was_taken(log):
                    raise PortTaken(f"port {port} was taken before the server bound it")
                raise NotReady(f"bentoml serve exited before loading the model:\n{log.read_text()[-2000:]}")
            if time.monotonic() > give_up:
                stop_process_group(process)
                raise NotReady(f"the worker never reached the model load:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)  # a poll for the file, not a measured duration
        return process, port

    return start_on_free_port(start)


def _send_get(port: int, path: str) -> socket.socket:
    """A connection on which GET path was sent; its answer is read later."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    with sock:
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def test_requests_sent_while_the_model_loads_wait_for_it(served, tmp_path):
    """BentoML binds the port before the worker builds the service, and uvicorn accepts
    connections only once the service (model load and warm-up prediction) is built. So a request
    sent while the load is held is answered after it, with the loaded model: never a 503."""
    hold = tmp_path / "hold"
    hold.mkdir()
    process, port = _held(served.bentoml_home, hold)
    try:
        # Sent while the worker is inside the load: the listening socket queues them.
        pending = {path: _send_get(port, path) for path in ("/health", "/readyz", "/v2/health/ready")}
        (hold / "release").touch()
        answers = {path: _answer(sock) for path, sock in pending.items()}
        assert answers["/health"][0] == 200, answers["/health"]
        health = json.loads(answers["/health"][1])
        assert health["status"] == "ok" and health["model"]["name"] == "ClassificationModel"
        assert answers["/readyz"][0] == 200, answers["/readyz"]
        assert answers["/v2/health/ready"] == (200, b'{"ready":true}')
    finally:
        stop_process_group(process)


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Another HTTP server on 127.0.0.1 that answers 200 {"foreign": true} to any GET; its port."""
    with running_http_server(fixed_page(b'{"foreign": true}', content_type="application/json")) as port:
        yield port


def test_a_port_taken_before_the_server_binds_it_is_replaced(served, foreign_server, monkeypatch):
    """free_port() releases its port before the server binds it: here the first port it hands
    out belongs to another server that answers 200 everywhere. start_server must neither take that
    server's 200 for its own readiness nor give up: it starts ours on another port."""
    ports = iter([foreign_server])
    real_free_port = tests.processes.free_port
    monkeypatch.setattr(tests.processes, "free_port", lambda: next(ports, None) or real_free_port())
    server = start_server(home=served.bentoml_home)
    try:
        assert server.url != f"http://127.0.0.1:{foreign_server}"
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok", health
        # The first try really ran on the taken port, and failed there.
        assert port_was_taken(served.bentoml_home / f"serve-{foreign_server}.log")
    finally:
        stop_process_group(server.process)


@pytest.mark.parametrize("grace", [15.0, 0.0], ids=["sigterm", "sigkill"])
def test_a_stopped_server_leaves_no_process_behind(served, grace):
    """BentoML's worker runs in a session of its own: a stop that only signals the server's process
    group would leave it serving. With no grace the stop goes straight to SIGKILL."""
    server = start_server(home=served.bentoml_home)
    tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    assert any("_bentoml_impl.worker" in " ".join(p.cmdline()) for p in tree[1:]), tree
    stop_process_group(server.process, grace=grace)
    _, alive = psutil.wait_procs(tree, timeout=HANG_GUARD)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]  # dead, not yet reaped by init
    assert not alive, [" ".join(p.cmdline()) for p in alive]


def test_a_setting_the_service_cannot_take_stops_it_with_one_line(served, tmp_path):
    """LOG_FORMAT=xml, MAX_ROWS=abc or MODEL_THREADS=-1: `bentoml serve` exits 1 naming the variables, no traceback."""
    from tests.e2e.conftest import serve_command

    argv, env = serve_command(home=served.bentoml_home, port=0,
                              env={"LOG_FORMAT": "xml", "MAX_ROWS": "abc", "MODEL_THREADS": "-1"})
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=HANG_GUARD, check=False,
                          cwd=tests.processes.REPO_ROOT)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1, lines
    assert "Traceback" not in done.stdout + done.stderr
    assert len(lines) == 1 and "LOG_FORMAT='xml'" in lines[0] and "MAX_ROWS='abc'" in lines[0], lines
    assert "MODEL_THREADS='-1'" in lines[0], lines
