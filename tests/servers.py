"""Helpers for tests that start real servers: wait for them over HTTP, stop them for good."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

# One way to probe, wait for and stop a server group (tests/processes.py), which the benchmark imports too.
from tests.processes import (NotReady, PortTaken, launch_and_wait, port_was_taken, start_mlflow_server,
                             start_on_free_port, wait_for_http)
from tests.processes import stop_server as stop_process_group

__all__ = ["NotReady", "PortTaken", "forget_mlflow_uris", "launch_and_wait", "fixed_page", "metric_samples",
           "metric_total", "port_was_taken", "running_http_server", "start_mlflow_server",
           "start_on_free_port", "stop_process_group", "wait_for_http"]


def forget_mlflow_uris() -> None:
    """Drop mlflow's process-wide tracking and registry URIs, which outrank the environment."""
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called name on a Prometheus /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called name whose labels include the given ones."""
    return sum(value for found, value in metric_samples(text, name)
               if all(found.get(key) == wanted for key, wanted in labels.items()))


def fixed_page(body: bytes, *, content_type: str) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler that answers every GET and POST with 200 and body, and logs nothing."""
    class FixedPage(http.server.BaseHTTPRequestHandler):
        def _page(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _page

        def log_message(self, *args: object) -> None:  # keep the test's output clean
            pass

    return FixedPage


@contextlib.contextmanager
def running_http_server(handler) -> Iterator[int]:
    """handler served on a free 127.0.0.1 port by a thread of this process, while inside; the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
