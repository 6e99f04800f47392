"""HTTP contract of a real `bentoml serve` process (127.0.0.1 only)."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import mlflow
import numpy as np
import pytest

from serving.errors import REASONS
from serving.monitoring import MIN_PSI_ROWS
from tests.e2e import hostile
from tests.servers import metric_samples, metric_total
from training.data import load_dataset, split_dataset

pytestmark = pytest.mark.e2e

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
HANG_GUARD = 60  # seconds; only keeps a broken server from hanging a test


@pytest.fixture
def production(served):
    """The production version as the registry sees it."""
    mlflow.set_tracking_uri(served.tracking_uri)
    mlflow.set_registry_uri(served.tracking_uri)
    return mlflow.MlflowClient().get_model_version_by_alias("ClassificationModel", "production")


def test_psi_gauges_appear_at_200_rows_and_react_to_shifted_inputs(served):
    """No classifier_feature_psi series until MIN_PSI_ROWS rows were seen (the PSI of a handful of
    rows is noise), then a large PSI for rows at the edge of the training range. A scrape of
    /metrics first counts what this (single) worker answered, so no wait is needed.

    It runs first on this module's server: the rows the other tests send would count too."""
    def scrape() -> str:
        return httpx.get(f"{served.url}/metrics").text

    before = scrape()
    seen = int(metric_total(before, "classifier_request_rows_sum"))  # rows every route answered so far
    assert seen < MIN_PSI_ROWS - 1, f"{seen} rows were served before this test: it must run first"
    assert "classifier_feature_psi{" not in before
    shifted = [7.9, 2.0, 6.9, 2.5]  # at the edge of the training range in every feature
    response = httpx.post(f"{served.url}/predict", json={"features": [shifted] * (MIN_PSI_ROWS - 1 - seen)})
    assert response.status_code == 200
    one_short = scrape()
    assert metric_total(one_short, "classifier_request_rows_sum") == MIN_PSI_ROWS - 1
    assert "classifier_feature_psi{" not in one_short

    assert httpx.post(f"{served.url}/predict", json={"features": [shifted]}).status_code == 200
    after = scrape()
    assert metric_total(after, "classifier_request_rows_sum") == MIN_PSI_ROWS
    for feature in hostile.FEATURES:
        assert f'classifier_feature_psi{{feature="{feature}"}}' in after, feature
    assert metric_total(after, "classifier_feature_psi", feature="petal length (cm)") > 1.0


def test_health_reports_the_promoted_version(served, production):
    response = httpx.get(f"{served.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    model = body["model"]
    assert model["name"] == "ClassificationModel"
    assert model["version"] == str(production.version)
    assert model["run_id"] == production.run_id
    assert model["dataset"] == "iris"
    assert model["classes"] == ["setosa", "versicolor", "virginica"]
    assert len(model["features"]) == 4
    run = mlflow.get_run(production.run_id)
    assert model["metrics"]["f1"] == pytest.approx(run.data.metrics["f1"])


def test_predict_matches_the_registered_model_on_the_test_split(served, production):
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    frame = split.X_test
    uri = "models:/ClassificationModel@production"
    expected_labels = np.asarray(mlflow.pyfunc.load_model(uri).predict(frame))
    expected_proba = mlflow.sklearn.load_model(uri).predict_proba(frame)

    response = httpx.post(f"{served.url}/predict", json={"features": split.X_test.to_numpy().tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "ClassificationModel", "version": str(production.version)}
    predictions = body["predictions"]
    assert [p["class_index"] for p in predictions] == expected_labels.tolist()
    assert [p["label"] for p in predictions] == [dataset.class_names[i] for i in expected_labels]
    got = np.array([[p["probabilities"][name] for name in dataset.class_names] for p in predictions])
    np.testing.assert_allclose(got, expected_proba, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


def test_a_flat_row_is_one_prediction(served):
    response = httpx.post(f"{served.url}/predict", json={"features": IRIS_ROW})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1
    assert response.json()["predictions"][0]["label"] == "setosa"


BAD_REQUESTS = [
    ("wrong row length", {"json": {"features": [[1.0, 2.0, 3.0]]}}, 422),
    ("ragged rows", {"json": {"features": [IRIS_ROW, [1.0]]}}, 422),
    ("string value", {"json": {"features": [[1.0, "a", 3.0, 4.0]]}}, 422),
    ("boolean value", {"json": {"features": [[1.0, True, 3.0, 4.0]]}}, 422),
    ("null value", {"json": {"features": [[1.0, None, 3.0, 4.0]]}}, 422),
    ("null features", {"json": {"features": None}}, 400),
    ("NaN literal", {"content": b'{"features": [[NaN, 1, 2, 3]]}'}, 400),
    ("Infinity literal", {"content": b'{"features": [[Infinity, 1, 2, 3]]}'}, 400),
    ("float64 overflow", {"content": b'{"features": [[1e999, 1, 2, 3]]}'}, 422),
    ("empty list", {"json": {"features": []}}, 400),
    ("empty body", {"content": b""}, 400),
    ("malformed JSON", {"content": b'{"features": [[1, 2'}, 400),
    ("top-level array", {"json": [IRIS_ROW]}, 400),
    ("unknown key", {"json": {"features": [IRIS_ROW], "extra": 1}}, 400),
    ("duplicate keys", {"content": b'{"features": [[1,2,3,4]], "features": [[1,2,3,4]]}'}, 400),
    ("too many rows", {"json": {"features": [IRIS_ROW] * 10_001}}, 422),
    ("values out of range", {"json": {"features": [[1.7e308, -1.7e308, 1.7e308, 0.0]]}}, 422),
    ("invalid UTF-8", {"content": b'{"features": [[1, 2, 3, "\xff"]]}'}, 400),
    ("deep nesting", {"content": b'{"features": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"}, 400),
]


@pytest.mark.parametrize("name, kwargs, status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_with_an_error_sentence(served, name, kwargs, status):
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{served.url}/predict", headers=headers, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str) and len(message) > 10


def test_wrong_content_type_is_415(served):
    response = httpx.post(f"{served.url}/predict", content=json.dumps({"features": [IRIS_ROW]}),
                          headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_wrong_method_is_405(served):
    response = httpx.get(f"{served.url}/predict")
    assert response.status_code == 405
    assert response.json()["error"]


def test_bentoml_endpoints_stay_available(served):
    for path in ("/livez", "/readyz", "/metrics", "/"):
        assert httpx.get(f"{served.url}{path}").status_code == 200, path
    spec = httpx.get(f"{served.url}/docs.json").json()
    assert {"/health", "/predict"} <= set(spec["paths"])


def test_service_survives_bad_input(served):
    before = httpx.post(f"{served.url}/predict", json={"features": [IRIS_ROW]}).json()
    for _, kwargs, _ in BAD_REQUESTS:
        httpx.post(f"{served.url}/predict", headers={"content-type": "application/json"},
                   timeout=30, **kwargs)
    assert httpx.get(f"{served.url}/health").status_code == 200
    assert httpx.post(f"{served.url}/predict", json={"features": [IRIS_ROW]}).json() == before


@pytest.mark.parametrize("bad, route", hostile.cases("served"))
def test_every_post_route_refuses_hostile_input_with_a_sentence(served, bad, route):
    """The body faults of the hostile table (tests/e2e/hostile.py) on every POST route."""
    answer = hostile.send(served.url, bad, route)
    hostile.assert_refused(answer, bad, route, url=served.url)
    assert hostile.valid_request(served.url, route).status_code == 200  # still serving


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_v2_infer_takes_any_content_type(served, content_type):
    route = hostile.BY_NAME["v2-infer"]
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{served.url}{route.path}", content=route.body(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["setosa"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/no-such-path", 404), ("POST", "/predict/extra", 404), ("DELETE", "/health", 405),
    ("PUT", "/predict", 405), ("POST", "/livez", 405)])
def test_unknown_paths_and_methods_answer_json(served, method, path, status):
    response = httpx.request(method, f"{served.url}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]


def test_metadata_gives_lineage(served, production):
    response = httpx.get(f"{served.url}/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == str(production.version) and body["run_id"] == production.run_id
    assert body["alias"] == "production"
    assert body["bento_tag"].startswith("classification_model:v")
    assert "linear_params.npz" in body["sha256"] and body["imported_at"]
    assert body == httpx.get(f"{served.url}/health").json()["model"]


def test_prometheus_counters_move(served):
    def scrape() -> str:
        return httpx.get(f"{served.url}/metrics").text

    before = scrape()
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [50.0, 3.0, 1.4, 0.2]]
    assert httpx.post(f"{served.url}/predict", json={"features": rows}).status_code == 200
    httpx.post(f"{served.url}/predict", json={"features": [[1.0, 2.0]]})
    after = scrape()
    assert metric_total(after, "classifier_predictions_total", label="setosa") \
        - metric_total(before, "classifier_predictions_total", label="setosa") >= 1
    assert metric_total(after, "classifier_predictions_total", label="virginica") \
        - metric_total(before, "classifier_predictions_total", label="virginica") >= 1
    assert metric_total(after, "classifier_request_rows_count") - metric_total(before, "classifier_request_rows_count") == 1
    assert metric_total(after, "classifier_request_rows_sum") - metric_total(before, "classifier_request_rows_sum") == 3
    assert metric_total(after, "classifier_rejected_requests_total", reason="wrong_length") \
        - metric_total(before, "classifier_rejected_requests_total", reason="wrong_length") == 1
    assert metric_total(after, "classifier_feature_out_of_range_total", feature="sepal length (cm)") \
        - metric_total(before, "classifier_feature_out_of_range_total", feature="sepal length (cm)") == 1


# One request for each reason a refusal is counted under (classifier_rejected_requests_total),
# on the default server; REJECTIONS_ELSEWHERE lists the others and why.
_JSON = {"content-type": "application/json"}
_RECORD = dict(zip(hostile.FEATURES, IRIS_ROW))
_V2_INFER = f"{hostile.V2_MODEL_PATH}/infer"
_CSV_HEADER = ",".join(hostile.FEATURES)


def _tensor(data=IRIS_ROW, shape=(1, 4), datatype="FP64", name="input") -> dict:
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": data}


def _infer(*inputs, **extra) -> dict:
    return {"json": {"inputs": list(inputs), **extra}}


def _column(index: int) -> dict:
    return _tensor(name=hostile.FEATURES[index], shape=(1,), data=[IRIS_ROW[index]])


REJECTIONS = [  # reason, method, path, request
    ("empty_body", "POST", "/predict", {"content": b"", "headers": _JSON}),
    ("bad_encoding", "POST", "/predict", {"content": b'{"features": [[1, 2, 3, "\xff"]]}', "headers": _JSON}),
    ("malformed_json", "POST", "/predict", {"content": b'{"features": [[1, 2', "headers": _JSON}),
    ("not_an_object", "POST", "/predict", {"json": [IRIS_ROW]}),
    ("duplicate_keys", "POST", "/predict", {"content": b'{"features": [[1,2,3,4]], "features": [[1,2,3,4]]}',
                                            "headers": _JSON}),
    ("unknown_keys", "POST", "/predict", {"json": {"features": [IRIS_ROW], "extra": 1}}),
    ("missing_features", "POST", "/predict", {"json": {}}),
    ("empty_features", "POST", "/predict", {"json": {"features": []}}),
    ("not_a_row", "POST", "/predict", {"json": {"features": [IRIS_ROW, 5]}}),
    ("wrong_length", "POST", "/predict", {"json": {"features": [[1.0, 2.0, 3.0]]}}),
    ("not_a_number", "POST", "/predict", {"json": {"features": [[1.0, "a", 3.0, 4.0]]}}),
    ("not_finite", "POST", "/predict", {"content": b'{"features": [[NaN, 1, 2, 3]]}', "headers": _JSON}),
    ("out_of_range", "POST", "/predict", {"json": {"features": [[1e200, 1.0, 2.0, 3.0]]}}),
    ("too_many_rows", "POST", "/predict", {"json": {"features": [IRIS_ROW] * 10_001}}),
    ("content_type", "POST", "/predict", {"content": json.dumps({"features": [IRIS_ROW]}),
                                          "headers": {"content-type": "text/plain"}}),
    ("method", "GET", "/predict", {}),
    ("missing_column", "POST", "/predict", {"json": {"records": [{hostile.FEATURES[0]: 5.1}]}}),
    ("unknown_column", "POST", "/predict", {"json": {"records": [{**_RECORD, "colour": 1.0}]}}),
    ("malformed_csv", "POST", "/invocations", {"content": (_CSV_HEADER + '\n"5"x,3.5,1.4,0.2\n').encode(),
                                               "headers": {"content-type": "text/csv"}}),
    ("duplicate_column", "POST", "/invocations", {
        "content": f"{hostile.FEATURES[0]},{_CSV_HEADER}\n5.1,5.1,3.5,1.4,0.2\n".encode(),
        "headers": {"content-type": "text/csv"}}),
    ("not_found", "GET", "/v2/no-such-path", {}),
    ("unknown_model", "POST", "/v2/models/OtherModel/infer", _infer(_tensor())),
    ("bad_header_length", "POST", _V2_INFER, {"content": b"{}", "headers": {"inference-header-content-length": "99"}}),
    ("binary_without_header", "POST", _V2_INFER, {
        "content": b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", '
                   b'"parameters": {"binary_data_size": 32}}]}' + np.array(IRIS_ROW, "<f8").tobytes()}),
    ("bad_id", "POST", _V2_INFER, _infer(_tensor(), id=7)),
    ("bad_parameters", "POST", _V2_INFER, _infer(_tensor(), parameters=[])),
    ("missing_inputs", "POST", _V2_INFER, {"json": {"inputs": []}}),
    ("duplicate_input", "POST", _V2_INFER, _infer(_column(0), _column(0))),
    ("bad_tensor", "POST", _V2_INFER, _infer("input")),
    ("bad_shape", "POST", _V2_INFER, _infer(_tensor(shape=(1, -4)))),
    ("bad_binary", "POST", _V2_INFER, _infer({"name": "input", "shape": [1, 4], "datatype": "FP64",
                                              "parameters": {"binary_data_size": -1}})),
    ("missing_data", "POST", _V2_INFER, _infer({"name": "input", "shape": [1, 4], "datatype": "FP64"})),
    ("bad_outputs", "POST", _V2_INFER, _infer(_tensor(), outputs={})),
    ("unknown_output", "POST", _V2_INFER, _infer(_tensor(), outputs=[{"name": "colour"}])),
    ("duplicate_output", "POST", _V2_INFER, _infer(_tensor(), outputs=[{"name": "label"}, {"name": "label"}])),
    ("wrong_datatype", "POST", _V2_INFER, _infer(_tensor(datatype="BYTES", data=["a", "b", "c", "d"]))),
    ("wrong_shape", "POST", _V2_INFER, _infer(_tensor(shape=(1, 3), data=IRIS_ROW[:3]))),
    ("unknown_input", "POST", _V2_INFER, _infer(_column(0), _tensor(name="colour", shape=(1,), data=[1.0]))),
    ("missing_input", "POST", _V2_INFER, _infer(_column(0), _column(1))),
    ("bad_data", "POST", _V2_INFER, _infer(_tensor(data={"a": 1}))),
    ("wrong_length", "POST", _V2_INFER, _infer(_tensor(data=IRIS_ROW[:3]))),
    ("not_a_number", "POST", _V2_INFER, _infer(_tensor(data=[5.1, "x", 1.4, 0.2]))),
    ("not_finite", "POST", _V2_INFER, _infer(_tensor(datatype="INT64", data=[2**70, 3, 1, 0]))),
    ("out_of_range", "POST", _V2_INFER, _infer(_tensor(data=[1e200, 3.5, 1.4, 0.2]))),
    ("empty_features", "POST", _V2_INFER, _infer(_tensor(shape=(0, 4), data=[]))),
]
REJECTIONS_ELSEWHERE = {
    "auth": "test_auth.py, on the server with an API key",
    "too_large": "test_limits.py, on the server with small limits",
    "timeout": "test_limits.py, on the server with small limits",
    "not_ready": "never over HTTP: uvicorn accepts connections once the model is loaded (test_startup.py)",
    "needs_records": "test_families.py, on a churn server (iris has no text columns)",
    "not_text": "test_families.py, on a churn server (iris has no text columns)",
}


def test_every_rejection_reason_is_covered_here_or_elsewhere():
    """A new refusal reason needs a row in REJECTIONS (or a word in REJECTIONS_ELSEWHERE); REASONS
    is the code's own list (tests/unit/test_monitoring.py)."""
    assert {reason for reason, *_ in REJECTIONS} | set(REJECTIONS_ELSEWHERE) == set(REASONS)


def _rejected_by_reason(text: str) -> Counter:
    """Refused requests by reason, as one /metrics page counts them."""
    counts: Counter = Counter()
    for labels, value in metric_samples(text, "classifier_rejected_requests_total"):
        counts[labels["reason"]] += value
    return counts


@pytest.mark.parametrize("reason, method, path, request_", REJECTIONS,
                         ids=[f"{reason}-{path}" for reason, _, path, _ in REJECTIONS])
def test_each_refusal_is_counted_once_under_its_reason(served, reason, method, path, request_):
    """classifier_rejected_requests_total{reason} grows by exactly one, and no other reason moves;
    a scrape of /metrics first counts what the worker answered."""
    before = _rejected_by_reason(httpx.get(f"{served.url}/metrics").text)
    response = httpx.request(method, f"{served.url}{path}", timeout=30, **request_)
    assert 400 <= response.status_code < 500 and response.json()["error"], response.text[:300]
    after = _rejected_by_reason(httpx.get(f"{served.url}/metrics").text)
    assert {key: after[key] - before[key] for key in after if after[key] != before[key]} == {reason: 1}


DURATION_COUNT = "classifier_http_request_duration_seconds_count"


def _requests_by_route(text: str) -> dict[tuple[str, str], float]:
    """(endpoint, status) -> value of every DURATION_COUNT sample; its labels are exactly those two."""
    counts = {}
    for labels, value in metric_samples(text, DURATION_COUNT):
        assert set(labels) == {"endpoint", "status"}, labels
        counts[labels["endpoint"], labels["status"]] = value
    return counts


def test_metrics_count_requests_per_route(served):
    """Each answered request counts once, under its route (V2 model paths by their template)."""
    version = httpx.get(f"{served.url}/health").json()["model"]["version"]
    model_path = hostile.V2_MODEL_PATH
    tensor = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]}
    split = {"dataframe_split": {"columns": hostile.FEATURES, "data": [IRIS_ROW]}}
    csv_body = {"content": hostile.BY_NAME["invocations-csv"].body(), "headers": {"content-type": "text/csv"}}
    sent = [  # method, path, request, the endpoint label it counts under, its status
        ("POST", "/predict", {"json": {"features": [IRIS_ROW]}}, "/predict", 200),
        ("POST", "/predict", {"json": {"features": [IRIS_ROW, IRIS_ROW]}}, "/predict", 200),
        ("POST", "/predict", {"json": {"features": [[1.0]]}}, "/predict", 422),
        ("GET", "/predict", {}, "/predict", 405),
        ("POST", "/invocations", {"json": split}, "/invocations", 200),
        ("POST", "/invocations", csv_body, "/invocations", 200),
        ("POST", "/invocations", {"json": {"rows": [IRIS_ROW]}}, "/invocations", 400),
        ("GET", "/ping", {}, "/ping", 200),
        ("GET", "/ping", {}, "/ping", 200),
        ("GET", "/version", {}, "/version", 200),
        ("POST", f"{model_path}/infer", {"json": tensor}, "/v2/models/{name}/infer", 200),
        ("POST", f"{model_path}/versions/{version}/infer", {"json": tensor}, "/v2/models/{name}/infer", 200),
        ("POST", f"{model_path}/infer", {"json": {"inputs": []}}, "/v2/models/{name}/infer", 400),
        ("POST", "/v2/models/OtherModel/infer", {"json": tensor}, "/v2/models/{name}/infer", 404),
        ("GET", model_path, {}, "/v2/models/{name}", 200),
        ("GET", "/v2/health/ready", {}, "/v2/health/ready", 200),
        ("GET", "/v2/no-such-path", {}, "/v2/other", 404),
    ]
    expected = dict(Counter((label, str(status)) for *_, label, status in sent))

    def scrape() -> dict[tuple[str, str], float]:
        return _requests_by_route(httpx.get(f"{served.url}/metrics").text)

    before = scrape()
    for method, path, request, _, status in sent:
        response = httpx.request(method, f"{served.url}{path}", **request)
        assert response.status_code == status, (method, path, response.text[:200])
    # A request is counted just after its answer is written, so the last one may be a moment
    # late for the first scrape: scrape until it is there. The limit only ends a broken wait.
    give_up = time.monotonic() + HANG_GUARD
    while True:
        after = scrape()
        increase = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
        if increase == expected or time.monotonic() > give_up:
            break
        time.sleep(0.05)  # a poll, not a measured duration
    assert increase == expected
    assert not any("ClassificationModel" in endpoint or "OtherModel" in endpoint for endpoint, _ in after)


def test_too_many_rows_is_each_protocols_bad_request_with_one_sentence(served):
    """One row over MAX_ROWS: 422 on /predict, 400 on MLflow's and V2's routes (their servers answer
    every bad request with 400), the same sentence on all three, counted under one reason."""
    rows = [IRIS_ROW] * 10_001
    sentence = "10001 rows is more than the limit of 10000 per request"
    predict = httpx.post(f"{served.url}/predict", json={"features": rows})
    assert (predict.status_code, predict.json()) == (422, {"error": sentence})
    invocations = httpx.post(f"{served.url}/invocations",
                             json={"dataframe_split": {"columns": hostile.FEATURES, "data": rows}})
    assert (invocations.status_code, invocations.json()) == (
        400, {"error_code": "BAD_REQUEST", "message": sentence, "error": sentence})
    tensor = {"name": "input", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}
    infer = httpx.post(f"{served.url}{hostile.V2_MODEL_PATH}/infer", json={"inputs": [tensor]})
    assert (infer.status_code, infer.json()) == (400, {"error": sentence})
