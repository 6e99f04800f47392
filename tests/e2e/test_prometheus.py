"""Monitoring end to end: Debian's prometheus scrapes a real `bentoml serve` with the shipped rules.

Prometheus is started by the documented command (`python -m monitor.prometheus`), with 2 s scrape
and 1 s evaluation intervals instead of the shipped 15 s (no waits of minutes); the rules and the job
are the shipped ones. The service logs with LOG_FORMAT=json, and its log is read back. The tests
run in file order: normal traffic first (no alert, every dashboard panel has data), then traffic
far outside the training ranges (the drift alert names the drifting features), then the picture.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_iris

from monitor.picture import RATE_INTERVAL, dashboard_panels, prometheus_get, render
from monitor.prometheus import RULES_FILE, find_prometheus
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import Server, imported_home, start_server
from tests.servers import (
    launch_and_wait,
    metric_samples,
    start_on_free_port,
    stop_process_group,
)
from training.cli import CommandError

pytestmark = pytest.mark.e2e

WINDOW = "30s"  # the dashboard's $__rate_interval here: 30 scrapes
PETALS = {"petal length (cm)", "petal width (cm)"}
REFUSED = {("/predict", 422, "wrong_length"), ("/predict", 415, "content_type")}
# Generous bounds for "eventually" (a scrape, a rule evaluation): a broken set-up fails instead
# of hanging; they are not measurements.
SETTLE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_template: Path):
    """Promote and import in this module's own stores, then serve with LOG_FORMAT=json."""
    with imported_home(tmp_path_factory.mktemp("monitored"), trained_template) as (_, home):
        running = start_server(home=home, env={"LOG_FORMAT": "json"})
    yield running
    stop_process_group(running.process)


@pytest.fixture(scope="module")
def prometheus(server: Server, tmp_path_factory: pytest.TempPathFactory):
    """`python -m monitor.prometheus` scraping the server every 2 s; its URL."""
    if find_prometheus() is None:
        pytest.skip("prometheus is not installed (Debian/Ubuntu: apt-get install -y prometheus)")
    data = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(server.url).netloc

    def start(port: int):
        argv = [sys.executable, "-m", "monitor.prometheus", "--target", target, "--listen", f"127.0.0.1:{port}",
                "--data", str(data), "--scrape-interval", "2s", "--evaluation-interval", "1s"]
        url = f"http://127.0.0.1:{port}"
        return url, launch_and_wait(argv, ready_url=f"{url}/-/ready", log=data / f"prometheus-{port}.log",
                                    env=dict(os.environ), cwd=REPO_ROOT, timeout=60)

    url, process = start_on_free_port(start)
    yield url
    stop_process_group(process)


def query(url: str, expr: str) -> list[dict]:
    """The instant vector expr returns now."""
    return prometheus_get(url, "/api/v1/query", {"query": expr})["result"]


def wait_for(what: str, check, timeout: float = SETTLE_TIMEOUT):
    """check()'s first truthy result, polled; fails with what after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.5)


def settled(url: str, rows: int) -> None:
    """Wait until Prometheus scraped `rows` predicted rows and evaluated every rule after that scrape."""
    wait_for(f"scrape of {rows} predicted rows", lambda: any(
        float(r["value"][1]) >= rows for r in query(url, 'sum(classifier_predictions_total{job="classifier"})')))
    seen = time.time()
    wait_for("rule evaluation after the scrape", lambda: all(
        _evaluated_at(group) > seen + 1 for group in prometheus_get(url, "/api/v1/rules", {})["groups"]))


def _evaluated_at(group: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(group["lastEvaluation"].replace("Z", "+00:00")[:26] + "+00:00").timestamp()


def _alerts(url: str) -> list[dict]:
    return prometheus_get(url, "/api/v1/alerts", {})["alerts"]


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def normal_traffic(server: Server, prometheus: str) -> int:
    """Every iris row twice, one row a request, and two refused requests; the rows predicted."""
    rows = load_iris().data
    # The scoring routes' series and each refusal reason's are exported at zero from the start
    # (ServiceMetrics): once Prometheus has them, it counts every request that follows, the first
    # one included.
    wait_for("first scrape", lambda: query(
        prometheus, 'classifier_http_request_duration_seconds_count{endpoint="/predict",status="200"} == 0'))
    wait_for("first scrape of the refusals", lambda: len(query(
        prometheus, 'classifier_rejected_requests_total{reason=~"wrong_length|content_type"} == 0')) == 2)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for row in np.concatenate([rows, rows]):
            assert client.post("/predict", json={"features": [row.tolist()]}).status_code == 200
        assert client.post("/predict", json={"features": [[5.1, 3.5, 1.4]]}).status_code == 422
        assert client.post("/predict", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    settled(prometheus, 2 * len(rows))
    # The first refusal of each reason is a rise Prometheus sees (0, then 1), not a series born at 1.
    wait_for("the first refusals seen as a rise", lambda: len(query(
        prometheus, f'changes(classifier_rejected_requests_total{{reason=~"wrong_length|content_type"}}[{WINDOW}]) >= 1')) == 2)
    return 2 * len(rows)


def test_the_shipped_rules_load_and_evaluate_without_errors(prometheus, normal_traffic):
    loaded = [rule for group in prometheus_get(prometheus, "/api/v1/rules", {})["groups"] for rule in group["rules"]]
    assert len(loaded) == len(_rules())
    assert [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"] == []


def test_every_series_the_rules_and_the_dashboard_name_is_one_the_service_exports(server, normal_traffic):
    named = set()
    for expr in [rule["expr"] for rule in _rules()] + [e for p in dashboard_panels() for e, _ in p.queries]:
        named |= set(re.findall(r"\b(classifier_[a-z_]+)\b", expr))
    exported = {name for name in named if metric_samples(httpx.get(f"{server.url}/metrics").text, name)}
    assert named == exported, f"not on /metrics: {sorted(named - exported)}"


def test_after_normal_traffic_no_alert_is_pending_or_firing(prometheus, normal_traffic):
    psi = query(prometheus, 'classifier_feature_psi{job="classifier"}')
    assert len(psi) == 4  # the drift alerts have values to judge
    assert _alerts(prometheus) == []


def test_every_dashboard_panel_query_returns_a_series(prometheus, normal_traffic):
    empty = [(panel.title, expr) for panel in dashboard_panels() for expr, _ in panel.queries
             if not query(prometheus, expr.replace(RATE_INTERVAL, WINDOW))]
    assert empty == []


def test_refusals_are_json_log_lines_with_route_status_and_reason(server, normal_traffic):
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    refused = {(r["route"], r["status"], r["reason"]) for r in records if "reason" in r}
    assert refused == REFUSED
    assert any(record["logger"] == "service" and "serving" in record["message"] for record in records)


def test_traffic_outside_the_training_ranges_raises_the_drift_alert_for_those_features(prometheus, server, normal_traffic):
    rows = load_iris().data[np.arange(1050) % 150].copy()
    rows[:, 2:] *= 10  # the petals, far beyond anything seen in training
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for chunk in np.split(rows, 21):
            assert client.post("/predict", json={"features": chunk.tolist()}).status_code == 200
    settled(prometheus, normal_traffic + len(rows))
    (critical,) = [rule for rule in _rules() if rule.get("alert") == "ClassifierFeatureDriftCritical"]
    drifting = {result["metric"]["feature"] for result in query(prometheus, critical["expr"])}
    assert drifting == PETALS
    pending = wait_for("pending drift alerts", lambda: [a for a in _alerts(prometheus) if a["state"] == "pending"])
    assert {(a["labels"]["alertname"], a["labels"]["feature"]) for a in pending} == \
        {("ClassifierFeatureDriftCritical", feature) for feature in PETALS}


def test_the_picture_draws_every_panel_from_range_queries(prometheus, normal_traffic, tmp_path):
    output = tmp_path / "monitoring.png"
    counts = render(prometheus, output=output, minutes=5, window=WINDOW)
    assert [title for title, count in counts.items() if count == 0] == []
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_query_prometheus_refuses_is_one_readable_error(prometheus):
    with pytest.raises(CommandError, match=r"^Prometheus refused 'sum\(': .*parse error"):
        prometheus_get(prometheus, "/api/v1/query", {"query": "sum("})
