"""Unit tests for data loading, splitting, fitting and metrics (no MLflow)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from training.data import DataValidationError, Dataset, load_dataset, split_dataset, validate_dataset
from training.models import GridPoint
from training.train import compute_metrics, describe_features, fit_pipeline

pytestmark = pytest.mark.unit


def logistic(*, C: float, penalty: str) -> GridPoint:
    return GridPoint(model="logistic_regression", params={"C": C, "penalty": penalty})


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
    train_rows = {tuple(r) for r in a.X_train.to_numpy()}
    assert not any(tuple(r) in train_rows for r in a.X_test.to_numpy())
    assert len(train_rows) == len(a.X_train)  # wine has no duplicate rows to hide a leak


def test_scaler_never_sees_test_rows():
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(logistic(C=1.0, penalty="l2"), split, dataset=dataset, random_state=42)
    numeric = pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    scaler = numeric.named_steps["scale"]
    X_train = split.X_train.to_numpy()
    np.testing.assert_allclose(scaler.mean_, X_train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_, X_train.std(axis=0))
    np.testing.assert_array_equal(numeric.named_steps["impute"].statistics_, np.median(X_train, axis=0))
    assert not np.allclose(scaler.mean_, dataset.X.to_numpy().mean(axis=0))
    assert scaler.n_samples_seen_ == len(split.y_train)


@pytest.mark.parametrize("penalty, zero_coefs", [("l1", True), ("l2", False)])
def test_penalty_maps_to_l1_ratio(penalty, zero_coefs):
    dataset = load_dataset("breast_cancer")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(logistic(C=0.1, penalty=penalty), split, dataset=dataset, random_state=42)
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


def small_dataset() -> Dataset:
    """Two numeric columns (one with a missing value) and a text column, eight rows."""
    X = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                      "b": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5],
                      "c": pd.Series(["u", "v", None, "u", "v", "u", "v", "u"], dtype=object)})
    return Dataset(name="t", X=X, y=np.array([0, 1] * 4), class_names=["x", "y"],
                   numeric_features=["a", "b"], categorical_features=["c"], sha256="", source="test")


def test_missing_values_are_imputed_from_the_training_rows_not_refused():
    dataset = small_dataset()
    validate_dataset(dataset)  # missing values are data now, not an error
    split = split_dataset(dataset, test_size=0.25, random_state=0)
    pipeline = fit_pipeline(logistic(C=1.0, penalty="l2"), split, dataset=dataset, random_state=0)
    imputer = pipeline.named_steps["preprocess"].named_transformers_["numeric"].named_steps["impute"]
    np.testing.assert_array_equal(imputer.statistics_,
                                  np.nanmedian(split.X_train[["a", "b"]].to_numpy(), axis=0))
    probabilities = pipeline.predict_proba(split.X_test)
    assert np.all(np.isfinite(probabilities)) and probabilities.shape == (2, 2)


@pytest.mark.parametrize("change, words", [
    (dict(numeric_features=["a"]), "do not match the columns"),
    (dict(numeric_features=["a", "b", "z"]), "do not match the columns"),
    (dict(numeric_features=["a", "b", "c"], categorical_features=[]), "is not float64"),
    (dict(numeric_features=["a"], categorical_features=["b", "c"]), "'b' is not of dtype object"),
    (dict(y=np.array([0, 1, 2, 0, 1, 0, 1, 0])), "not indices into the class names"),
    (dict(y=np.array([0, 1, 0])), "8 rows but 3 targets"),
])
def test_inconsistent_datasets_are_refused(change, words):
    bad = dataclasses.replace(small_dataset(), **change)
    with pytest.raises(DataValidationError, match=words):
        validate_dataset(bad)


def test_feature_stats_bins_cover_the_training_rows():
    dataset = load_dataset("iris")
    stats = describe_features(dataset.X, dataset.feature_names)
    assert [f["name"] for f in stats["features"]] == dataset.feature_names
    assert stats["n_rows"] == len(dataset.X)
    for feature, column in zip(stats["features"], dataset.X.to_numpy().T):
        assert feature["min"] == column.min() and feature["max"] == column.max()
        assert sum(feature["expected_fractions"]) == pytest.approx(1.0)
        assert len(feature["expected_fractions"]) == len(feature["bin_edges"]) + 1


def test_feature_stats_leave_out_missing_values_and_text_columns():
    dataset = small_dataset()
    stats = describe_features(dataset.X, dataset.numeric_features)
    assert [f["name"] for f in stats["features"]] == ["a", "b"]
    a = stats["features"][0]
    assert a["min"] == 1.0 and a["max"] == 8.0 and a["mean"] == pytest.approx(34 / 7)
    assert sum(a["expected_fractions"]) == pytest.approx(1.0)
    assert all(np.isfinite(a["bin_edges"]))
