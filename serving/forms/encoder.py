"""The fitted preprocessing (imputers, scaler, one-hot) as numpy arithmetic: sklearn's operations in microseconds."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.schema import Table, TableSchema

ENCODER_ARRAYS = "encoder.npz"
ENCODER_CATEGORIES = "encoder.json"


class _Lookup(dict):
    """A text column's value -> its one-hot column; -1 for a value it does not know."""

    def __missing__(self, value: object) -> int:
        return -1


@dataclass(frozen=True)
class Encoder:
    """Numeric columns: fill, then (x - mean) / scale. Text columns: fill, then one-hot."""

    fill: np.ndarray  # (n_numeric,) the imputer's medians
    mean: np.ndarray  # (n_numeric,)
    scale: np.ndarray  # (n_numeric,)
    categories: list[list[str]]  # per text column, the one-hot columns in order
    missing: str  # what a missing text value becomes before encoding
    # Per text column, value -> its one-hot column in the output (None: the missing value's);
    # a value absent from its column's lookup encodes as all zeros, as handle_unknown="ignore".
    _lookups: list[dict[str | None, int]] = field(init=False, repr=False, compare=False)
    _row_numbers: tuple = field(init=False, repr=False, compare=False)  # encode_row's, as Python floats

    def __post_init__(self) -> None:
        lookups, offset = [], self.mean.shape[0]
        for cats in self.categories:
            # Interned: the records reader gives known text as the schema's interned strings, and a
            # lookup of the very key object skips hashing and comparing the text.
            lookup = _Lookup((sys.intern(c), offset + i) for i, c in enumerate(cats))
            if self.missing in lookup:
                lookup[None] = lookup[self.missing]
            lookups.append(lookup)
            offset += len(cats)
        object.__setattr__(self, "_lookups", lookups)
        object.__setattr__(self, "_row_numbers", (self.fill.tolist(), self.mean.tolist(), self.scale.tolist(),
                                                  [0.0] * (offset - self.mean.shape[0])))

    @property
    def encodes_rows(self) -> bool:
        """True when encode_row gives encode's numbers: Python's x / 0.0 raises where numpy gives inf."""
        return self._row_numbers[2].count(0.0) == 0

    def encode_row(self, numbers: list[float], texts: list[str | None] | tuple) -> list[float]:
        """encode() of one row, to the bit, as Python floats (numpy's ~1 us a call is more than the row)."""
        fill, mean, scale, zeros = self._row_numbers
        encoded = [((f if x != x else x) - m) / s for x, f, m, s in zip(numbers, fill, mean, scale)]
        if self._lookups:
            onehot, start = zeros.copy(), len(encoded)
            for column in map(dict.__getitem__, self._lookups, texts):  # -1: _Lookup.__missing__
                if column >= 0:
                    onehot[column - start] = 1.0
            encoded += onehot
        return encoded

    @property
    def n_outputs(self) -> int:
        return self.mean.shape[0] + sum(map(len, self.categories))

    def encode(self, table: Table, *, float32: bool = False) -> np.ndarray:
        """The preprocessed (rows, n_outputs) float64 matrix the classifier takes.

        float32: the numeric columns rounded to float32, as sklearn's trees see their input (the
        one-hot columns' 0s and 1s are exact in float32: rounding them too was a pass for nothing).
        """
        X = table.numeric
        if X.shape[1] != self.mean.shape[0] or table.categorical.shape[1] != len(self.categories):
            raise ValueError(f"the rows have {X.shape[1]} numeric and {table.categorical.shape[1]} text "
                             f"columns; the model takes {self.mean.shape[0]} and {len(self.categories)}")
        rows = len(table)
        if rows == 1 and self.encodes_rows:  # one row: Python floats cost less than a dozen numpy calls
            out = np.array([self.encode_row(X[0].tolist(), table.categorical[0].tolist())])
        else:
            out = self._encode_table(table)
        if float32:
            numeric = out[:, :X.shape[1]]
            numeric[...] = numeric.astype(np.float32)
        return out

    def _encode_table(self, table: Table) -> np.ndarray:
        """encode() of any number of rows, in numpy."""
        X, rows = table.numeric, len(table)
        if np.isnan(X).any():
            X = np.where(np.isnan(X), self.fill, X)
        out = np.zeros((rows, self.n_outputs))
        scaled = out[:, :X.shape[1]]
        np.subtract(X, self.mean, out=scaled)
        scaled /= self.scale
        if self.categories:
            # Each value's place in the flat output: its one-hot column plus its row's start.
            columns = self._text_columns(table)
            places = columns + (np.arange(rows) * self.n_outputs)[:, None]
            seen = columns >= 0  # -1: a value the column does not know, all zeros
            out.reshape(-1)[places.ravel() if seen.all() else places[seen]] = 1.0
        return out

    def _text_columns(self, table: Table) -> np.ndarray:
        """Each text value's one-hot column in the output (-1: none), (rows, text columns)."""
        if table.codes is not None:  # each distinct value looked up once, then picked by index
            columns = [np.fromiter(map(lookup.__getitem__, words.tolist()), dtype=np.intp, count=len(words))
                       [table.codes.indices[:, j]] for j, (lookup, words) in enumerate(zip(self._lookups, table.codes.words))]
            return np.column_stack(columns)
        # One C-level pass per column.
        rows, categorical = len(table), table.categorical
        return np.column_stack([np.fromiter(map(lookup.__getitem__, categorical[:, j].tolist()), dtype=np.intp,
                                            count=rows) for j, lookup in enumerate(self._lookups)])

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
