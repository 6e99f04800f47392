"""LOG_FORMAT=json at the ASGI level: an error and a refusal as JSON lines with route, status and reason."""

from __future__ import annotations

import io
import json
import logging

import pytest

from serving.core import Limits
from serving.http import ServingApp
from serving.logs import configure_logging, json_formatter
from tests.unit.test_app_asgi import _call, loaded  # noqa: F401 (loaded is a fixture)

pytestmark = pytest.mark.unit


@pytest.fixture
def json_lines():
    """The serving.http logger's records as JSON lines in a buffer, at INFO, while the test runs."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("serving.http")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def test_an_unexpected_error_is_one_json_line_with_its_traceback(loaded, json_lines):  # noqa: F811
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5), api_key=None)

    def broken(*rows):
        raise RuntimeError("boom")

    object.__setattr__(loaded.predictor, "predict_row", broken)
    assert _call(app, "POST", "/predict", json={"features": [[1.0, 2.0]]}).status_code == 500
    (record,) = json_lines()
    assert (record["level"], record["logger"], record["route"], record["status"], record["reason"]) == \
        ("ERROR", "serving.http", "/predict", 500, "internal")
    assert record["message"] == "unexpected error on /predict"
    assert "RuntimeError: boom" in record["exc_info"] and record["time"].endswith("+0000")


def test_a_refusal_is_one_json_line_with_route_status_and_reason(loaded, json_lines):  # noqa: F811
    app = ServingApp()
    app.bind(loaded, limits=Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5), api_key=None)
    assert _call(app, "POST", "/v2/models/Other/infer", json={"inputs": []}).status_code == 404
    (record,) = json_lines()
    assert (record["level"], record["route"], record["status"], record["reason"]) == \
        ("INFO", "/v2/models/{name}/infer", 404, "unknown_model")
    assert record["message"].startswith("refused POST /v2/models/Other/infer: model 'Other' is not served here")


def test_text_format_leaves_the_handlers_alone():
    root = logging.getLogger()
    handlers = list(root.handlers)
    configure_logging("text")
    assert root.handlers == handlers
