"""The registered pipeline itself, read with skops (no pickle) once its sha256 is checked: exact, and the slowest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.forms import RowByTable
from serving.layout import MLFLOW_MODEL_DIR, read_mlmodel
from serving.schema import Table, TableSchema


@dataclass
class SklearnPredictor(RowByTable):
    """pipeline.predict_proba on a DataFrame of the raw columns."""

    pipeline: object = field(repr=False)
    schema: TableSchema
    form = "sklearn"

    def predict_proba(self, table: Table) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(table.to_frame(self.schema)), dtype=np.float64)

    def save(self, directory: Path) -> None:
        """Nothing to add: the MLflow model folder is already in the Bento model."""


def load(directory: Path, schema: TableSchema, *, threads: int = 1) -> SklearnPredictor:
    """The MLflow model's skops file, checked first (threads: unused, the exact fallback stays on one)."""
    import skops.io
    import threadpoolctl

    flavor = read_mlmodel(directory)["flavors"]["sklearn"]
    path = directory / MLFLOW_MODEL_DIR / flavor["pickled_model"]
    if flavor.get("serialization_format") != "skops":
        raise TypeError(f"{path.name} is not in skops format; refusing to unpickle it")
    # The file's sha256 was checked against the import's record before we got here.
    pipeline = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    # One OpenMP thread: for the few rows of a request, a thread team costs more than it saves.
    threadpoolctl.threadpool_limits(limits=1, user_api="openmp")
    return SklearnPredictor(pipeline=pipeline, schema=schema)


def from_pipeline(pipeline, schema: TableSchema) -> SklearnPredictor:
    return SklearnPredictor(pipeline=pipeline, schema=schema)
