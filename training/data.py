"""Load, validate and split the scikit-learn toy datasets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

from training.config import DATASETS

_LOADERS = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
}


class DataValidationError(ValueError):
    """The dataset is not fit to train on."""


@dataclass(frozen=True)
class Dataset:
    """Features, integer targets and the names that give them meaning."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    class_names: list[str]


@dataclass(frozen=True)
class Split:
    """A stratified train/test split of one dataset."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_dataset(name: str) -> Dataset:
    """Load a bundled scikit-learn dataset by name and validate it."""
    if name not in _LOADERS:
        raise DataValidationError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    bunch = _LOADERS[name]()
    dataset = Dataset(
        name=name,
        X=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target),
        feature_names=[str(f) for f in bunch.feature_names],
        class_names=[str(c) for c in bunch.target_names],
    )
    validate_dataset(dataset)
    return dataset


def validate_dataset(dataset: Dataset) -> None:
    """Raise DataValidationError unless the data is numeric, complete and consistently named."""
    X, y = dataset.X, dataset.y
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataValidationError(f"{dataset.name}: expected a non-empty 2-D feature matrix")
    if not np.issubdtype(X.dtype, np.number):
        raise DataValidationError(f"{dataset.name}: features are not numeric")
    if not np.all(np.isfinite(X)):
        raise DataValidationError(f"{dataset.name}: features contain missing or infinite values")
    if y.shape[0] != X.shape[0]:
        raise DataValidationError(f"{dataset.name}: {X.shape[0]} rows but {y.shape[0]} targets")
    if len(dataset.feature_names) != X.shape[1]:
        raise DataValidationError(f"{dataset.name}: feature names do not match the columns")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(dataset.class_names):
        raise DataValidationError(f"{dataset.name}: targets are not indices into the class names")


def split_dataset(dataset: Dataset, *, test_size: float, random_state: int) -> Split:
    """Stratified train/test split with a fixed random state."""
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X, dataset.y, test_size=test_size, random_state=random_state, stratify=dataset.y
    )
    return Split(X_train=X_train, X_test=X_test, y_train=y_train, y_test=y_test)
