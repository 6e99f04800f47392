"""What the model takes (named numeric and text columns) and a batch of rows in that shape."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

NUMBER = "number"
CATEGORY = "category"


@dataclass(frozen=True)
class Feature:
    """One input column: its name, its type and, for text columns, the values seen in training."""

    name: str
    type: str  # NUMBER or CATEGORY
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        if self.type == NUMBER:
            return {"name": self.name, "type": NUMBER}
        return {"name": self.name, "type": CATEGORY, "categories": list(self.categories)}


@dataclass(frozen=True)
class TableSchema:
    """The model's input columns in training order, and its class names."""

    features: tuple[Feature, ...]
    class_names: tuple[str, ...]

    @cached_property  # asked on every request
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property  # asked on every request
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type == NUMBER]

    @cached_property  # asked on every request
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == CATEGORY]

    @cached_property  # asked on every request
    def all_numeric(self) -> bool:
        """True when rows can be sent as plain lists of numbers (`{"features": [[...]]}`)."""
        return all(f.type == NUMBER for f in self.features)

    def to_dict(self) -> dict:
        """The schema.json document; `feature_names` and `class_names` as before typed columns."""
        return {"feature_names": self.feature_names, "class_names": list(self.class_names),
                "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, document: dict) -> TableSchema:
        # Models imported before typed columns existed list names only: all numeric.
        features = document.get("features") or [{"name": n, "type": NUMBER}
                                                 for n in document["feature_names"]]
        return cls(features=tuple(Feature(f["name"], f["type"], tuple(f.get("categories", ())))
                                  for f in features),
                   class_names=tuple(document["class_names"]))


@dataclass(frozen=True)
class TextCodes:
    """The text columns as a reader with a dictionary holds them: each value an index into its column's words."""

    indices: np.ndarray  # (rows, len(schema.categorical)) integers
    words: tuple[np.ndarray, ...]  # per text column, object: its distinct values (str or None)

    def take(self, rows: np.ndarray) -> TextCodes:
        return TextCodes(self.indices[rows], self.words)


class Row(NamedTuple):
    """One row to score as Python values (the usual request): its numbers (NaN = missing) and texts, in schema order."""

    numbers: list[float]
    texts: tuple = ()  # str or None, one per text column


@dataclass(frozen=True)
class Table:
    """Rows to score: schema.numeric as float64 (NaN = missing), schema.categorical as str or None, in order."""

    numeric: np.ndarray  # (rows, len(schema.numeric)) float64
    categorical: np.ndarray  # (rows, len(schema.categorical)) object
    # The same text, as indices into each column's few distinct values, when the reader has them
    # (batch scoring: Arrow's dictionary): the encoder then looks up each distinct value once.
    codes: TextCodes | None = None

    def __len__(self) -> int:
        return self.numeric.shape[0]

    def take(self, rows: np.ndarray) -> Table:
        """These rows (indices) of the table."""
        return Table(self.numeric[rows], self.categorical[rows], None if self.codes is None else self.codes.take(rows))

    @classmethod
    def from_numbers(cls, X: np.ndarray) -> Table:
        """All-numeric rows, as `{"features": [[...]]}` sends them."""
        return cls(numeric=X, categorical=np.empty((X.shape[0], 0), dtype=object))

    @classmethod
    def from_rows(cls, rows: list[Row]) -> Table:
        """Rows of Python values as one table."""
        numbers, texts = zip(*rows)
        return cls(numeric=np.array(numbers, dtype=np.float64).reshape(len(rows), -1),
                   categorical=np.array(texts, dtype=object).reshape(len(rows), -1))

    def to_frame(self, schema: TableSchema):
        """A DataFrame with the schema's columns in training order: what the sklearn pipeline takes."""
        import pandas as pd

        columns = {name: self.numeric[:, j] for j, name in enumerate(schema.numeric)}
        for j, name in enumerate(schema.categorical):
            values = self.categorical[:, j].copy()
            values[pd.isna(values)] = np.nan  # sklearn's imputer sees NaN as missing, not None
            columns[name] = pd.Series(values, dtype=object)
        return pd.DataFrame(columns, index=range(len(self)))[schema.feature_names]
