"""The fitted preprocessing (imputers, scaler, one-hot) as numpy arithmetic: sklearn's operations in microseconds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.schema import Table, TableSchema

ENCODER_ARRAYS = "encoder.npz"
ENCODER_CATEGORIES = "encoder.json"


@dataclass(frozen=True)
class Encoder:
    """Numeric columns: fill, then (x - mean) / scale. Text columns: fill, then one-hot."""

    fill: np.ndarray  # (n_numeric,) the imputer's medians
    mean: np.ndarray  # (n_numeric,)
    scale: np.ndarray  # (n_numeric,)
    categories: list[list[str]]  # per text column, the one-hot columns in order
    missing: str  # what a missing text value becomes before encoding
    _lookups: list[dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lookups", [{c: i for i, c in enumerate(cats)} for cats in self.categories])

    @property
    def n_outputs(self) -> int:
        return self.mean.shape[0] + sum(map(len, self.categories))

    def encode(self, table: Table) -> np.ndarray:
        """The preprocessed (rows, n_outputs) float64 matrix the classifier takes."""
        X = table.numeric
        if X.shape[1] != self.mean.shape[0] or table.categorical.shape[1] != len(self.categories):
            raise ValueError(f"the rows have {X.shape[1]} numeric and {table.categorical.shape[1]} text "
                             f"columns; the model takes {self.mean.shape[0]} and {len(self.categories)}")
        if np.isnan(X).any():
            X = np.where(np.isnan(X), self.fill, X)
        scaled = X - self.mean
        scaled /= self.scale
        if not self.categories:
            return scaled
        rows = len(table)
        onehot = np.zeros((rows, sum(map(len, self.categories))))
        offset = 0
        for j, lookup in enumerate(self._lookups):
            column = table.categorical[:, j]
            index = np.fromiter((lookup.get(self.missing if v is None else v, -1) for v in column),
                                dtype=np.int64, count=rows)
            seen = index >= 0  # a category never seen in training encodes as all zeros
            onehot[np.flatnonzero(seen), offset + index[seen]] = 1.0
            offset += len(lookup)
        return np.hstack([scaled, onehot])

    def save(self, directory: Path) -> None:
        np.savez(directory / ENCODER_ARRAYS, fill=self.fill, mean=self.mean, scale=self.scale)
        (directory / ENCODER_CATEGORIES).write_text(
            json.dumps({"categories": self.categories, "missing": self.missing}))

    @classmethod
    def load(cls, directory: Path) -> Encoder:
        """Read what save wrote; never unpickles."""
        with np.load(directory / ENCODER_ARRAYS, allow_pickle=False) as data:
            arrays = {k: np.ascontiguousarray(data[k], dtype=np.float64) for k in ("fill", "mean", "scale")}
        text = json.loads((directory / ENCODER_CATEGORIES).read_text())
        return cls(**arrays, categories=text["categories"], missing=text["missing"])

    @classmethod
    def from_preprocessor(cls, preprocess, schema: TableSchema) -> Encoder:
        """Read the fitted numbers out of the ColumnTransformer that training.models builds."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        from serving.forms import Unsupported

        if not isinstance(preprocess, ColumnTransformer):
            raise Unsupported("the pipeline does not start with a ColumnTransformer")
        parts = {name: (step, list(columns)) for name, step, columns in preprocess.transformers_
                 if not (isinstance(step, str) and step == "drop")}
        if set(parts) - {"numeric", "categorical"}:
            raise Unsupported(f"unexpected preprocessing steps {sorted(parts)}")
        n_numeric = len(schema.numeric)
        fill, mean, scale = np.zeros(n_numeric), np.zeros(n_numeric), np.ones(n_numeric)
        if "numeric" in parts:
            step, columns = parts["numeric"]
            imputer, scaler = step.named_steps.get("impute"), step.named_steps.get("scale")
            if columns != schema.numeric or not isinstance(imputer, SimpleImputer) \
                    or not isinstance(scaler, StandardScaler) or len(step.steps) != 2:
                raise Unsupported("numeric preprocessing is not imputer + StandardScaler on the numeric columns")
            fill = np.asarray(imputer.statistics_, dtype=np.float64)
            if scaler.with_mean:
                mean = np.asarray(scaler.mean_, dtype=np.float64)
            if scaler.with_std:
                scale = np.asarray(scaler.scale_, dtype=np.float64)
        elif n_numeric:
            raise Unsupported("numeric columns are not preprocessed")
        categories: list[list[str]] = []
        missing = ""
        if "categorical" in parts:
            step, columns = parts["categorical"]
            imputer, onehot = step.named_steps.get("impute"), step.named_steps.get("onehot")
            if columns != schema.categorical or not isinstance(imputer, SimpleImputer) \
                    or imputer.strategy != "constant" or not isinstance(onehot, OneHotEncoder) \
                    or onehot.handle_unknown != "ignore" or onehot.drop is not None \
                    or getattr(onehot, "infrequent_categories_", None) is not None and \
                    any(c is not None for c in onehot.infrequent_categories_) or len(step.steps) != 2:
                raise Unsupported("text preprocessing is not constant imputer + one-hot (ignore unknown)")
            categories = [[str(c) for c in cats] for cats in onehot.categories_]
            missing = str(imputer.fill_value)
        elif schema.categorical:
            raise Unsupported("text columns are not preprocessed")
        return cls(fill=fill, mean=mean, scale=scale, categories=categories, missing=missing)


def encoder_and_classifier(pipeline, schema: TableSchema) -> tuple[Encoder, object]:
    """Split a (preprocess, classifier) pipeline into the numpy encoder and the fitted classifier."""
    from serving.forms import Unsupported

    steps = getattr(pipeline, "steps", [])
    if len(steps) != 2:
        raise Unsupported("expected a pipeline of preprocessing then a classifier")
    (_, preprocess), (_, classifier) = steps
    return Encoder.from_preprocessor(preprocess, schema), classifier
