"""Drift statistics: PSI values and the rolling window's bookkeeping."""

from __future__ import annotations

import re
import numpy as np
import pandas as pd
import pytest

from serving.monitoring import MIN_PSI_ROWS, DriftWindow, FeatureStats, observe_all, population_stability
from training.train import describe_features

pytestmark = pytest.mark.unit


def test_psi_is_zero_for_the_expected_distribution_and_grows_with_shift():
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    assert population_stability(expected, np.array([25, 25, 25, 25])) == pytest.approx(0.0)
    moderate = population_stability(expected, np.array([40, 30, 20, 10]))
    # (0.4-0.25)ln(1.6) + (0.3-0.25)ln(1.2) + (0.2-0.25)ln(0.8) + (0.1-0.25)ln(0.4)
    assert moderate == pytest.approx(0.15 * np.log(1.6) + 0.05 * np.log(1.2)
                                     + -0.05 * np.log(0.8) + -0.15 * np.log(0.4))
    assert population_stability(expected, np.array([100, 0, 0, 0])) > moderate


def _stats(rows: int = 1000) -> tuple[FeatureStats, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(rows, 2))
    return FeatureStats.from_dict(describe_features(pd.DataFrame(X, columns=["a", "b"]), ["a", "b"])), X


def test_window_of_training_like_rows_has_small_psi():
    stats, X = _stats()
    window = DriftWindow(stats, size=500)
    window.add(np.random.default_rng(1).normal(size=(500, 2)))
    assert max(window.psi()) < 0.1


def test_window_evicts_old_rows():
    stats, _ = _stats()
    window = DriftWindow(stats, size=100)
    window.add(np.full((60, 2), 50.0))  # far outside: all in the top bin
    assert all(counts.sum() == 60 for counts in window.counts)  # only the rows seen so far
    window.add(np.random.default_rng(2).normal(size=(30, 2)))
    window.add(np.random.default_rng(3).normal(size=(70, 2)))  # wraps: evicts the 60 shifted rows
    assert all(counts.sum() == 100 for counts in window.counts)
    assert window.counts[0][-1] < 30
    window.add(np.full((100, 2), 50.0))
    assert window.counts[0][-1] == 100 and window.psi()[0] > 1.0


def test_observe_all_counts_as_observe_one_by_one():
    from prometheus_client import CollectorRegistry, Histogram

    def samples(observe) -> dict:
        registry = CollectorRegistry()
        observe(Histogram("h", "h", ["route"], buckets=(0.001, 0.01, 0.1, 1.0), registry=registry).labels("/p"))
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}

    amounts = [0.0, 0.001, 0.0010000001, 0.05, 0.1, 3.0, 1e-9, 0.5] + \
        np.random.default_rng(0).exponential(0.02, 500).tolist()
    expected = samples(lambda child: [child.observe(amount) for amount in amounts])
    got = samples(lambda child: observe_all(child, amounts))
    assert got.keys() == expected.keys() and len(got) == 7  # 5 buckets, count, sum
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_psi_gauges_appear_only_once_the_window_holds_enough_rows():
    import asyncio

    import prometheus_client

    from serving.monitoring import MIN_PSI_ROWS, ServiceMetrics

    # Feature names of this test's own: the gauge is shared by every ServiceMetrics of the process.
    X = np.random.default_rng(0).normal(size=(1000, 2))
    stats = FeatureStats.from_dict(describe_features(pd.DataFrame(X, columns=["psi_a", "psi_b"]),
                                                     ["psi_a", "psi_b"]))
    shifted = np.full((1, 2), 50.0)  # far outside the training range: a large PSI once it shows

    def psi_samples() -> list:
        return [s for metric in prometheus_client.REGISTRY.collect() if metric.name == "classifier_feature_psi"
                for s in metric.samples if s.labels.get("feature", "").startswith("psi_")]

    async def feed(metrics: ServiceMetrics, rows: int) -> None:
        for _ in range(rows):
            metrics.observe(shifted, np.array([0]))
        metrics.flush()

    metrics = ServiceMetrics(class_names=["no", "yes"], stats=stats)
    asyncio.run(feed(metrics, MIN_PSI_ROWS - 1))
    assert metrics.psi is None and psi_samples() == []
    asyncio.run(feed(metrics, 1))
    values = {s.labels["feature"]: s.value for s in psi_samples()}
    assert set(values) == {"psi_a", "psi_b"} and min(values.values()) > 0.25


def test_the_readme_states_the_psi_minimum_the_code_applies():
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"the series appear only once (\d+) rows were seen", readme)
    assert stated is not None and int(stated.group(1)) == MIN_PSI_ROWS


def _refusal_reasons_in_code() -> set[str]:
    """The reason of every RequestError made in serving/ (directly, or by v2's _bad helper)."""
    import ast

    from tests.conftest import REPO_ROOT

    reasons: set[str] = set()
    for path in (REPO_ROOT / "serving").rglob("*.py"):
        tree = ast.parse(path.read_text())
        # Only a helper may pass its own argument on: v2's _bad(message, reason).
        helpers = {id(node) for function in ast.walk(tree)
                   if isinstance(function, ast.FunctionDef) and function.name == "_bad" for node in ast.walk(function)}
        for node in ast.walk(tree):
            name = isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name not in ("RequestError", "_bad"):
                continue
            position = 2 if name == "RequestError" else 1
            given = [k.value for k in node.keywords if k.arg == "reason"] or node.args[position:position + 1]
            if given and isinstance(given[0], ast.Constant):
                reasons.add(given[0].value)
            else:
                assert id(node) in helpers, f"{path.name}:{node.lineno}: a RequestError whose reason is not written out"
    return reasons


def test_every_refusal_reason_is_listed_and_exported_at_zero_from_start():
    """REASONS is the code's own list (no reason missing, none left over), and a new ServiceMetrics
    exports each refusal series before its first refusal, as rate() needs."""
    import prometheus_client

    from serving.errors import REASONS
    from serving.monitoring import ServiceMetrics

    assert set(REASONS) == _refusal_reasons_in_code()
    ServiceMetrics(class_names=["a", "b"], stats=None)
    exported = {sample.labels["reason"] for metric in prometheus_client.REGISTRY.collect()
                if metric.name == "classifier_rejected_requests" for sample in metric.samples
                if sample.name == "classifier_rejected_requests_total"}
    assert set(REASONS) <= exported
