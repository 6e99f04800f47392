"""Load an imported Bento model folder: check its hashes, then read it without unpickling."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.monitoring import FeatureStats
from serving.predictor import PARAMS_FILE, LinearPredictor

FEATURE_STATS_FILE = "feature_stats.json"


class ModelIntegrityError(RuntimeError):
    """A model file does not match the sha256 recorded when it was imported."""


@dataclass(frozen=True)
class LoadedModel:
    """The predictor and what clients are told about it."""

    predictor: LinearPredictor
    class_names: list[str]
    feature_names: list[str]
    info: dict = field(repr=False)  # the /health and /metadata "model" block
    summary: dict = field(repr=False)  # the /predict "model" block
    feature_stats: FeatureStats | None = field(default=None, repr=False)


def verify_sha256(directory: Path, expected: dict[str, str], names: list[str]) -> None:
    """Raise ModelIntegrityError unless each named file hashes to its recorded value."""
    for name in names:
        if name not in expected:
            raise ModelIntegrityError(f"no sha256 recorded for {name}; re-import the model")
        digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        if digest != expected[name]:
            raise ModelIntegrityError(f"{name} does not match its sha256 recorded at import")


def load_model(directory: Path, metadata: dict, *, tag: str) -> LoadedModel:
    """Verify, load and warm up the model saved by scripts/import_production.py."""
    has_stats = (directory / FEATURE_STATS_FILE).exists()
    verify_sha256(directory, metadata.get("sha256", {}),
                  [PARAMS_FILE, FEATURE_STATS_FILE] if has_stats else [PARAMS_FILE])
    predictor = LinearPredictor.load(directory)
    stats = (FeatureStats.from_dict(json.loads((directory / FEATURE_STATS_FILE).read_text()))
             if has_stats else None)
    class_names = list(metadata["class_names"])
    feature_names = list(metadata["feature_names"])
    if len(feature_names) != predictor.n_features or len(class_names) != predictor.n_classes:
        raise ModelIntegrityError("the model's names do not match its parameters")
    # Warm-up: prove the model predicts before the service says it is ready.
    probabilities = predictor.predict_proba(np.zeros((1, predictor.n_features)))
    if not np.isclose(probabilities.sum(), 1.0):
        raise ModelIntegrityError("the warm-up prediction is not a probability distribution")
    summary = {"name": metadata["registered_model"], "version": metadata["version"]}
    info = {
        **summary,
        "run_id": metadata["run_id"],
        "alias": metadata.get("alias"),
        "dataset": metadata["dataset"],
        "features": feature_names,
        "classes": class_names,
        "metrics": metadata.get("metrics", {}),
        "bento_tag": tag,
        "imported_at": metadata.get("imported_at"),
        "run_url": metadata.get("run_url") or None,
        "sha256": metadata.get("sha256", {}),
    }
    return LoadedModel(predictor=predictor, class_names=class_names, feature_names=feature_names,
                       info=info, summary=summary, feature_stats=stats)
