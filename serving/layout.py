"""The Bento model folder's layout: its file names, the sha256 record the import writes and the service checks, where the store keeps it."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# Files of the Bento model, relative to its folder; each served form adds its own (serving/forms/).
MLFLOW_MODEL_DIR = "mlflow_model"
SCALER_FILE = "scaler.skops"
SCHEMA_FILE = "schema.json"
FEATURE_STATS_FILE = "feature_stats.json"
EVALUATION_ROWS_FILE = "evaluation_rows.json"


class ModelIntegrityError(RuntimeError):
    """A model file does not match the sha256 recorded when it was imported."""


def read_mlmodel(directory: Path) -> dict:
    """The MLmodel file of the MLflow model inside the Bento model folder."""
    import yaml

    return yaml.safe_load((directory / MLFLOW_MODEL_DIR / "MLmodel").read_text())


def sha256_of(path: Path) -> str:
    """The file's sha256, read in blocks so a large model is never held in memory whole."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_sha256(directory: Path) -> dict[str, str]:
    """Every file under directory, by its path relative to it, with its sha256."""
    return {str(p.relative_to(directory)): sha256_of(p)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def verify_sha256(directory: Path, expected: dict[str, str]) -> None:
    """Raise ModelIntegrityError unless every file recorded at import still hashes to its value."""
    if not expected:
        raise ModelIntegrityError("no sha256 recorded for the model's files; re-import the model")
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file() or sha256_of(path) != digest:
            raise ModelIntegrityError(f"{name} does not match its sha256 recorded at import")


class NotInStore(LookupError):
    """No model of this tag in the BentoML store (or a tag BentoML would refuse)."""


# BentoML's tag rule (bentoml._internal.tag.validate_tag_str): lowercase letters, digits, "-", "_", ".".
_TAG_PART = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")


def find_in_store(tag: str, home: Path | None = None) -> tuple[Path, dict, str]:
    """The folder, metadata and full tag of a stored model, read from BentoML's store without importing it."""
    # Importing bentoml.models costs about a second (its cloud client); a batch job pays it on every
    # start. The store's layout, pinned by tests/unit/test_bento_store.py: models/NAME/VERSION/model.yaml,
    # and models/NAME/latest holding the newest VERSION.
    import yaml

    name, colon, version = tag.lower().partition(":")
    version = version or ("" if colon else "latest")
    if not _TAG_PART.match(name) or not _TAG_PART.match(version):
        raise NotInStore(f"{tag!r} is not a BentoML tag (NAME[:VERSION], lowercase letters, digits, -_.)")
    models = (home or Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")) / "models"
    try:
        if version == "latest":
            version = (models / name / "latest").read_text().strip()
        folder = models / name / version
        info = yaml.safe_load((folder / "model.yaml").read_text())
    except (OSError, yaml.YAMLError) as error:
        raise NotInStore(f"no model '{name}:{version}' in the BentoML store at {models}"
                         f" ({getattr(error, 'strerror', None) or type(error).__name__})") from None
    return folder, dict(info.get("metadata") or {}), f"{info['name']}:{info['version']}"
