"""Settings and paths shared by training, promotion and release (import): one place to change them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"

DATASETS = ("iris", "wine", "breast_cancer")
METRICS = ("accuracy", "precision", "recall", "f1")
# Names of the artifacts each training run logs next to its model.
SCALER_ARTIFACT = "scaler/scaler.skops"
SCHEMA_ARTIFACT = "schema.json"
FEATURE_STATS_ARTIFACT = "feature_stats.json"
EVALUATION_ROWS_ARTIFACT = "evaluation/rows.json"


class Settings(BaseSettings):
    """Every knob read from the environment, with the embedded SQLite store as the default."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    tracking_uri: str = Field(DEFAULT_TRACKING_URI, alias="MLFLOW_TRACKING_URI")
    # Only used for a local (sqlite) store; a server decides where artifacts go.
    artifact_root: Path | None = Field(None, alias="MLFLOW_ARTIFACT_ROOT")
    experiment_name: str = Field("classification", alias="MLFLOW_EXPERIMENT_NAME")
    registered_model_name: str = Field("ClassificationModel", alias="REGISTERED_MODEL_NAME")
    production_alias: str = Field("production", alias="PRODUCTION_ALIAS")
    bento_model_name: str = Field("classification_model", alias="BENTO_MODEL_NAME")
    # Seconds to wait for a tracking server before calling it unreachable.
    connect_timeout: float = Field(5.0, alias="MLFLOW_CONNECT_TIMEOUT")

    @property
    def is_remote(self) -> bool:
        """True when the tracking URI is an HTTP(S) server."""
        return urlparse(self.tracking_uri).scheme in ("http", "https")

    @property
    def local_artifact_root(self) -> Path | None:
        """Where a local SQLite store keeps artifacts: next to the database unless overridden."""
        if self.is_remote:
            return None
        if self.artifact_root is not None:
            return self.artifact_root
        parsed = urlparse(self.tracking_uri)
        if parsed.scheme == "sqlite":
            # sqlite:////abs/path.db -> /abs/path.db ; sqlite:///rel.db -> rel.db
            db_path = Path(self.tracking_uri.removeprefix("sqlite:///"))
            return db_path.resolve().parent / "mlartifacts"
        return PROJECT_ROOT / "mlartifacts"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
