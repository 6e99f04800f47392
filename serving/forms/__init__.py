"""The forms a model can be served in (linear, onnx, compiled, sklearn): one protocol, one module per form."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


# Fewer rows than this run on the calling thread alone: handing half of them to another thread
# costs more than it saves (a forest's 100 trees take ~4 us a row; a hand-off ~50 us).
PARALLEL_ROWS = 256


class RowSlices:
    """Runs a native model call on `threads` slices of a large input's rows at once (the call releases the GIL).

    Each row is scored on its own, so the answers are the same bits as one call's (tested).
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None  # started at the first large input

    def run(self, call: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> np.ndarray:
        """call(X), with X's rows split across the threads when there are enough of them."""
        slices = min(self.threads, len(X) // PARALLEL_ROWS)
        if slices < 2:
            return call(X)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="model")
        bounds = np.linspace(0, len(X), slices + 1).astype(int).tolist()
        others = [self._pool.submit(call, X[start:stop]) for start, stop in zip(bounds[1:-1], bounds[2:])]
        first = call(X[:bounds[1]])  # this thread takes the first slice
        return np.concatenate([first, *(other.result() for other in others)])


def _module(form: str):
    if form not in FORMS:
        raise ValueError(f"unknown served form {form!r}; choose one of {', '.join(FORMS)}")
    return import_module(f"serving.forms.{form}")


def convert(form: str, pipeline, schema: TableSchema) -> Predictor:
    """The pipeline in the given form; raises Unsupported when the form cannot express it."""
    return _module(form).from_pipeline(pipeline, schema)


def load_predictor(form: str, directory: Path, schema: TableSchema, *, threads: int = 1) -> Predictor:
    """Read a predictor that `save` wrote into directory; threads: slices of a large call run at once (tree forms)."""
    return _module(form).load(directory, schema, threads=threads)
