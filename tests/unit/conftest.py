"""Helpers shared by the unit tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from serving.predictor import PARAMS_FILE, LinearPredictor


def save_model_folder(directory: Path, predictor: LinearPredictor, *, class_names: list[str],
                      version: str) -> dict:
    """Save predictor as an imported model folder; return its metadata, sha256 included."""
    path = predictor.save(directory)
    return {"sha256": {PARAMS_FILE: hashlib.sha256(path.read_bytes()).hexdigest()},
            "class_names": class_names, "feature_names": ["x", "y"],
            "registered_model": "M", "version": version, "run_id": "r", "dataset": "d"}
