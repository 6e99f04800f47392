"""The shipped Prometheus config, rules and dashboard as files: promtool checks them and runs the rule tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.picture import dashboard_panels
from monitor.prometheus import CONFIG_FILE, RULES_FILE, write_config
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.unit

RULE_TESTS = RULES_FILE.parent / "alerts.test.yml"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
SEVERITIES = {"warning", "critical"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's promtool (package `prometheus`), which .ci/run installs."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install -y prometheus)")
    return found


def _promtool(promtool: str, *args: str, cwd: Path = RULES_FILE.parent) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_config_and_the_rules(promtool):
    checked = _promtool(promtool, "check", "config", CONFIG_FILE.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = _promtool(promtool, "check", "rules", RULES_FILE.name)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_rule_unit_tests_pass(promtool):
    result = _promtool(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_rule_test_whose_alert_does_not_fire(promtool, tmp_path):
    """The rule tests can fail: the same tests against rules whose drift threshold was raised."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["tests"] = [test for test in tests["tests"] if "drift" in test["name"]]  # the quick ones
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(tests))
    (tmp_path / RULES_FILE.name).write_text(RULES_FILE.read_text().replace(
        "(classifier_feature_psi{job=\"classifier\"}) >= 0.25", "(classifier_feature_psi{job=\"classifier\"}) >= 0.5"))
    result = _promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "ClassifierFeatureDriftCritical" in result.stdout + result.stderr


def test_the_local_config_is_valid_for_promtool(promtool, tmp_path):
    config = write_config(tmp_path, ["127.0.0.1:3000", "127.0.0.1:3001"], scrape_interval="1s",
                          evaluation_interval="1s")
    result = _promtool(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = yaml.safe_load(config.read_text())["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:3000", "127.0.0.1:3001"]}]


def test_every_alert_has_a_severity_a_summary_and_a_description():
    alerts = _alerts()
    assert len(alerts) >= 9
    for rule in alerts:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip() and "Look first" in rule["annotations"]["description"], rule["alert"]


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    for rule in _alerts():
        own = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{rule['alert']} never fires in {RULE_TESTS.name}"
        assert any(not case["exp_alerts"] for case in own), f"{rule['alert']} always fires in {RULE_TESTS.name}"


def test_the_dashboard_panels_use_the_provisioned_data_source():
    dashboard = json.loads((GRAFANA / "dashboards" / "classifier.json").read_text())
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "classifier.yml").read_text())["providers"]
    assert source["type"] == "prometheus" and provider["type"] == "file"
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {source["uid"]}
    titles = [panel.title for panel in dashboard_panels()]
    assert len(titles) == len(set(titles)) == len(dashboard["panels"])
    psi = next(panel for panel in dashboard_panels() if "PSI" in panel.title)
    assert psi.thresholds == [0.1, 0.25]


def _command(module: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_prometheus_command_without_prometheus_says_so_in_one_line(tmp_path):
    result = _command("monitor.prometheus", "--data", str(tmp_path), path=str(tmp_path))  # a PATH without it
    assert result.returncode == 1
    assert result.stdout + result.stderr == \
        "error: prometheus is not installed (Debian/Ubuntu: apt-get install -y prometheus)\n"


def test_the_picture_of_an_unreachable_prometheus_is_one_line_and_no_file(tmp_path):
    output = tmp_path / "monitoring.png"
    result = _command("monitor.picture", "--prometheus", f"http://127.0.0.1:{free_port()}", "--output", str(output))
    assert result.returncode == 1 and not output.exists()
    (line,) = (result.stdout + result.stderr).splitlines()
    assert line.startswith("error: cannot query Prometheus at http://127.0.0.1:") and "refused" in line
