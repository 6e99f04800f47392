"""Schema-driven fuzzing of the running service from its own OpenAPI document (bounded).

schemathesis' pytest plugin does not run under pytest 9 yet, so its hypothesis strategies
are driven directly.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from serving.routes import RouteTable
from tests.servers import metric_total

pytestmark = pytest.mark.e2e

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
MODEL_PATH = "/v2/models/ClassificationModel"  # /docs.json lists the V2 routes with the served name

# GET routes without parameters take no input, so there is no invalid request to generate for them.
CASES = [("/predict", "POST", POSITIVE), ("/predict", "POST", NEGATIVE),
         ("/health", "GET", POSITIVE),
         ("/invocations", "POST", POSITIVE), ("/invocations", "POST", NEGATIVE),
         (f"{MODEL_PATH}/infer", "POST", POSITIVE), (f"{MODEL_PATH}/infer", "POST", NEGATIVE),
         ("/ping", "GET", POSITIVE), ("/version", "GET", POSITIVE), (MODEL_PATH, "GET", POSITIVE)]

# OpenAPI gaps (the declarations in serving/protocols/), reported to the lead: these request bodies
# are declared looser than what the server accepts, so every "schema-valid" example schemathesis
# generates is refused with a (documented) 400, and its positive_data_acceptance check (ST202,
# "Schema-valid request rejected") fails. That one check is left out for them below and held
# to account by the strict xfail of test_requests_valid_by_the_schema_are_accepted.
LOOSE_REQUEST_SCHEMAS = {
    ("/invocations", "POST"): (
        "OpenAPI gap: POST /invocations declares its body as any JSON object (FastAPI `dict[str, Any]`), "
        "so schemathesis sends e.g. {} and gets 400 'the body needs exactly one of dataframe_split, "
        "dataframe_records, instances, inputs'; the text/csv body is not declared at all"),
    (f"{MODEL_PATH}/infer", "POST"): (
        "OpenAPI gap: POST /v2/models/{name}/infer declares V2InferRequest with any number of inputs "
        "and any name, shape, datatype and data, so schemathesis sends e.g. {\"inputs\": []} and gets "
        "400 \"'inputs' must be a non-empty list of tensors\""),
}


# Hypothesis' health checks stay on, but for too_slow: it fails a run whose data generation took
# longer than a wall-clock budget, a timing assertion; on 2 cores shared with the server under
# test and other jobs, it measures the machine, not the schema.
SUPPRESSED_HEALTH_CHECKS = [HealthCheck.too_slow]
MAX_EXAMPLES = 100
# Operations with a body get MAX_EXAMPLES distinct requests; hypothesis stops early only when it
# runs out of distinct inputs, as it does at once for a GET that takes none.
MIN_REQUESTS = {"POST": MAX_EXAMPLES // 2, "GET": 1}
DURATION_COUNT = "classifier_http_request_duration_seconds_count"


def _fuzz(url: str, path: str, method: str, mode: GenerationMode, **validate) -> list[int]:
    """Run up to MAX_EXAMPLES generated requests against one operation; the statuses seen."""
    schema = schemathesis.openapi.from_url(f"{url}/docs.json")
    operation = schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
    def check(case):
        response = case.call(base_url=url, timeout=10)
        seen.append(response.status_code)
        assert response.status_code < 500, response.text
        case.validate_response(response, **validate)

    check()
    return seen


def _answered(url: str, endpoint: str) -> float:
    """How many requests the server answered on endpoint (its metrics label), any status."""
    return metric_total(httpx.get(f"{url}/metrics").text, DURATION_COUNT, endpoint=endpoint)


@pytest.mark.parametrize("path, method, mode", CASES, ids=lambda v: getattr(v, "value", v))
def test_no_5xx_and_responses_match_the_schema(served, path, method, mode):
    loose = mode is POSITIVE and (path, method) in LOOSE_REQUEST_SCHEMAS
    endpoint = RouteTable().label(path)
    before = _answered(served.url, endpoint)
    seen = _fuzz(served.url, path, method, mode,
                 excluded_checks=[positive_data_acceptance] if loose else None)
    # Every generated request reached the service and was answered by it (none stopped in the
    # client or in uvicorn), and there were enough of them to mean something.
    assert len(seen) >= MIN_REQUESTS[method], seen
    assert _answered(served.url, endpoint) - before == len(seen)
    assert httpx.get(f"{served.url}/health").status_code == 200


@pytest.mark.parametrize("path, method", [
    pytest.param(path, method, marks=pytest.mark.xfail(strict=True, raises=FailureGroup, reason=reason))
    for (path, method), reason in LOOSE_REQUEST_SCHEMAS.items()])
def test_requests_valid_by_the_schema_are_accepted(served, path, method):
    _fuzz(served.url, path, method, POSITIVE, checks=[positive_data_acceptance])
