"""Helpers shared by the unit tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from serving.forms import Predictor
from serving.forms.encoder import Encoder
from serving.forms.linear import LinearPredictor
from serving.model import FEATURE_STATS_FILE
from serving.schema import NUMBER, Feature, Table, TableSchema


def numeric_schema(feature_names: list[str], class_names: list[str]) -> TableSchema:
    """The schema of a model whose columns are all numbers."""
    return TableSchema(features=tuple(Feature(name, NUMBER) for name in feature_names),
                       class_names=tuple(class_names))


def identity_encoder(n_numeric: int) -> Encoder:
    """An encoder that passes numbers through unchanged (missing values become 0)."""
    return Encoder(fill=np.zeros(n_numeric), mean=np.zeros(n_numeric), scale=np.ones(n_numeric),
                   categories=[], missing="")


def linear_predictor(coef: list[list[float]], intercept: list[float] | None = None) -> LinearPredictor:
    """A LogisticRegression on raw numbers: score = coef @ x + intercept."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.zeros(coef.shape[0]) if intercept is None else np.asarray(intercept, dtype=np.float64)
    return LinearPredictor(encoder=identity_encoder(coef.shape[1]), coef=coef, intercept=intercept)


def file_hashes(directory: Path) -> dict[str, str]:
    """The sha256 of every file in directory, by relative path, as the importer records them."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def save_model_folder(directory: Path, predictor: Predictor, *, schema: TableSchema, version: str,
                      feature_stats: dict | None = None) -> dict:
    """Save predictor as an imported model folder; return its metadata, sha256 of every file included."""
    directory.mkdir(parents=True, exist_ok=True)
    predictor.save(directory)
    if feature_stats is not None:
        (directory / FEATURE_STATS_FILE).write_text(json.dumps(feature_stats))
    return {"served_form": predictor.form, "schema": schema.to_dict(), "sha256": file_hashes(directory),
            "feature_names": schema.feature_names, "class_names": list(schema.class_names),
            "registered_model": "M", "version": version, "run_id": "r", "dataset": "d"}


def table_from_frame(frame: pd.DataFrame, schema: TableSchema) -> Table:
    """Rows of a pandas DataFrame holding the schema's columns (others are ignored)."""
    numeric = frame[schema.numeric].to_numpy(dtype=np.float64, na_value=np.nan) \
        if schema.numeric else np.empty((len(frame), 0))
    text = frame[schema.categorical].astype(object)
    categorical = text.where(pd.notna(text), None).to_numpy(dtype=object)
    return Table(numeric=np.ascontiguousarray(numeric), categorical=categorical)
