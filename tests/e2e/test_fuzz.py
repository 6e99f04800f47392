"""Schema-driven fuzzing of the running service from its own OpenAPI document (bounded).

schemathesis' pytest plugin does not run under pytest 9 yet, so its hypothesis strategies
are driven directly.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.e2e

# GET /health takes no input, so there is no invalid request to generate for it.
CASES = [("/predict", "POST", GenerationMode.POSITIVE), ("/predict", "POST", GenerationMode.NEGATIVE),
         ("/health", "GET", GenerationMode.POSITIVE)]


@pytest.mark.parametrize("path, method, mode", CASES, ids=lambda v: getattr(v, "value", v))
def test_no_5xx_and_responses_match_the_schema(served, path, method, mode):
    schema = schemathesis.openapi.from_url(f"{served.url}/docs.json")
    operation = schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(base_url=served.url, timeout=10)
        seen.append(response.status_code)
        assert response.status_code < 500, response.text
        case.validate_response(response)

    check()
    assert seen  # the fuzzer really sent requests
    assert httpx.get(f"{served.url}/health").status_code == 200
