"""The forms a model can be served in (linear, onnx, compiled, sklearn): one protocol, one module per form."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Protocol

import numpy as np

from serving.schema import Row, Table, TableSchema

# Fastest first: the importer takes the first form that converts and verifies.
FORMS = ("linear", "onnx", "compiled", "sklearn")


class Unsupported(TypeError):
    """This form cannot express the pipeline; the message says why."""


class Predictor(Protocol):
    """Class probabilities for a table of raw rows, like the pipeline's predict_proba."""

    form: str

    def predict_proba(self, table: Table) -> np.ndarray: ...

    def predict_row(self, numbers: list[float], texts: tuple = ()) -> list[float]:
        """predict_proba of one row given as Python values (see Row), as a list."""

    def save(self, directory: Path) -> None: ...


class RowByTable:
    """predict_row for a form with no quicker way: predict_proba of a one-row table."""

    def predict_row(self, numbers: list[float], texts: tuple = ()) -> list[float]:
        return self.predict_proba(Table.from_rows([Row(numbers, texts)]))[0].tolist()


def _module(form: str):
    if form not in FORMS:
        raise ValueError(f"unknown served form {form!r}; choose one of {', '.join(FORMS)}")
    return import_module(f"serving.forms.{form}")


def convert(form: str, pipeline, schema: TableSchema) -> Predictor:
    """The pipeline in the given form; raises Unsupported when the form cannot express it."""
    return _module(form).from_pipeline(pipeline, schema)


def load_predictor(form: str, directory: Path, schema: TableSchema, *, threads: int = 1) -> Predictor:
    """Read a predictor that `save` wrote into directory; threads: per call, for the forms that can use more."""
    return _module(form).load(directory, schema, threads=threads)
