"""Load an imported Bento model folder: check its hashes, then read its served form without unpickling."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.errors import one_line
from serving.forms import Predictor, load_predictor
from serving.layout import FEATURE_STATS_FILE, ModelIntegrityError, verify_sha256
from serving.monitoring import FeatureStats
from serving.schema import Table, TableSchema


@dataclass(frozen=True)
class LoadedModel:
    """The predictor, the columns it takes, and what clients are told about it."""

    predictor: Predictor
    schema: TableSchema
    info: dict = field(repr=False)  # the /health and /metadata "model" block
    summary: dict = field(repr=False)  # the /predict "model" block
    feature_stats: FeatureStats | None = field(default=None, repr=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.schema.class_names)


# Test hook: SERVE_HOLD_LOAD=<directory> holds load_model until a test releases it (hold_load).
HOLD_ENV = "SERVE_HOLD_LOAD"


def hold_load() -> None:
    """Test hook: with SERVE_HOLD_LOAD=<dir>, create <dir>/holding, then wait for <dir>/release (no timer)."""
    directory = os.environ.get(HOLD_ENV)
    if not directory:
        return
    (Path(directory) / "holding").touch()
    while not (Path(directory) / "release").exists():
        time.sleep(0.05)  # a poll of the file, not a measured duration


def load_model(directory: Path, metadata: dict, *, tag: str, threads: int = 1) -> LoadedModel:
    """Verify, load and warm up the model saved by scripts/import_production.py."""
    hold_load()
    if "served_form" not in metadata:
        raise ModelIntegrityError(f"{tag} was imported by an older version of this project; re-import it")
    verify_sha256(directory, metadata.get("sha256", {}))
    schema = TableSchema.from_dict(metadata["schema"])
    try:
        predictor = load_predictor(metadata["served_form"], directory, schema, threads=threads)
    except Exception as error:  # noqa: BLE001 - each form's reader fails its own way
        # e.g. numpy's refusal of an array that would need unpickling, said as a refusal of the model.
        raise ModelIntegrityError(f"the {metadata['served_form']} form of {tag} cannot be read from its "
                                  f"files: {one_line(error)}") from None
    stats_path = directory / FEATURE_STATS_FILE
    stats = FeatureStats.from_dict(json.loads(stats_path.read_text())) if stats_path.exists() else None
    # Warm-up: prove the model predicts, even a row with every value missing, before the
    # service says it is ready.
    empty = Table(numeric=np.full((1, len(schema.numeric)), np.nan),
                  categorical=np.full((1, len(schema.categorical)), None, dtype=object))
    try:
        probabilities = predictor.predict_proba(empty)
    except Exception as error:  # noqa: BLE001 - any failure here means the files disagree
        raise ModelIntegrityError(f"the model does not take the columns its schema lists: {error}") from None
    if probabilities.shape != (1, len(schema.class_names)) or not np.isclose(probabilities.sum(), 1.0):
        raise ModelIntegrityError("the warm-up prediction is not a probability distribution over the classes")
    summary = {"name": metadata["registered_model"], "version": metadata["version"]}
    info = {
        **summary,
        "run_id": metadata["run_id"],
        "alias": metadata.get("alias"),
        "dataset": metadata["dataset"],
        "features": schema.feature_names,
        "inputs": [f.to_dict() for f in schema.features],
        "classes": list(schema.class_names),
        "metrics": metadata.get("metrics", {}),
        "served_form": metadata["served_form"],
        "mlflow_version": metadata.get("mlflow_version"),
        "form_check": metadata.get("form_check", {}),
        "bento_tag": tag,
        "imported_at": metadata.get("imported_at"),
        "run_url": metadata.get("run_url") or None,
        "sha256": metadata.get("sha256", {}),
        "threads": getattr(predictor, "threads", 1),  # for a request of PARALLEL_ROWS rows or more
    }
    return LoadedModel(predictor=predictor, schema=schema, info=info, summary=summary,
                       feature_stats=stats)
