"""Unit tests for data loading, splitting, fitting and metrics (no MLflow)."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import DataValidationError, Dataset, load_dataset, split_dataset, validate_dataset
from training.train import HyperParams, compute_metrics, describe_features, fit_pipeline

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_stratified_split_keeps_class_ratios(name):
    dataset = load_dataset(name)
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    overall = np.bincount(dataset.y) / len(dataset.y)
    for part in (split.y_train, split.y_test):
        ratios = np.bincount(part, minlength=len(overall)) / len(part)
        # Stratification leaves at most one row per class of rounding error.
        assert np.all(np.abs(ratios - overall) <= 1.0 / len(part) + 1e-12)
    assert len(split.y_test) == pytest.approx(0.2 * len(dataset.y), abs=1)


def test_split_is_reproducible_and_disjoint():
    dataset = load_dataset("wine")
    a = split_dataset(dataset, test_size=0.25, random_state=7)
    b = split_dataset(dataset, test_size=0.25, random_state=7)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    train_rows = {tuple(r) for r in a.X_train}
    assert not any(tuple(r) in train_rows for r in a.X_test)


def test_scaler_never_sees_test_rows():
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(HyperParams(C=1.0, penalty="l2"), split,
                            feature_names=dataset.feature_names, random_state=42)
    scaler = pipeline.named_steps["scaler"]
    np.testing.assert_allclose(scaler.mean_, split.X_train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_, split.X_train.std(axis=0))
    assert not np.allclose(scaler.mean_, dataset.X.mean(axis=0))
    assert scaler.n_samples_seen_ == len(split.y_train)


@pytest.mark.parametrize("penalty, zero_coefs", [("l1", True), ("l2", False)])
def test_penalty_maps_to_l1_ratio(penalty, zero_coefs):
    dataset = load_dataset("breast_cancer")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(HyperParams(C=0.1, penalty=penalty), split,
                            feature_names=dataset.feature_names, random_state=42)
    coef = pipeline.named_steps["classifier"].coef_
    # An l1 fit with strong regularisation zeroes features; l2 never does exactly.
    assert bool(np.any(coef == 0)) is zero_coefs


def test_metrics_match_a_hand_computed_case():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    metrics = compute_metrics(y_true, y_pred)
    # Per class precision 1/2, 2/3, 1; recall 1/2, 1, 1/2; F1 1/2, 4/5, 2/3 (macro averages).
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_unknown_dataset_is_refused():
    with pytest.raises(DataValidationError, match="unknown dataset"):
        load_dataset("mnist")


def test_missing_values_are_refused():
    X = np.array([[1.0, np.nan], [2.0, 3.0]])
    bad = Dataset(name="t", X=X, y=np.array([0, 1]), feature_names=["a", "b"], class_names=["x", "y"])
    with pytest.raises(DataValidationError, match="missing"):
        validate_dataset(bad)


def test_feature_stats_bins_cover_the_training_rows():
    dataset = load_dataset("iris")
    stats = describe_features(dataset.X, dataset.feature_names)
    assert [f["name"] for f in stats["features"]] == dataset.feature_names
    for feature, column in zip(stats["features"], dataset.X.T):
        assert feature["min"] == column.min() and feature["max"] == column.max()
        assert sum(feature["expected_fractions"]) == pytest.approx(1.0)
        assert len(feature["expected_fractions"]) == len(feature["bin_edges"]) + 1
