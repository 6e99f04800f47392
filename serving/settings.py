"""The service's settings, read from the environment: which model to serve and the limits on a request."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; the training side has its own (training.config)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    bento_model_tag: str = Field("classification_model:latest", alias="BENTO_MODEL_TAG")
    max_rows: int = Field(10_000, alias="MAX_ROWS", gt=0)
    max_body_bytes: int = Field(8 * 1024 * 1024, alias="MAX_BODY_BYTES", gt=0)
    request_timeout: int = Field(10, alias="REQUEST_TIMEOUT", gt=0)
    # When set, the scoring routes need "Authorization: Bearer <key>".
    api_key: str | None = Field(None, alias="API_KEY")
    # Answer our routes ahead of BentoML's middleware (README "Performance"); off: BentoML runs
    # the declared predict API after our checks.
    fast_path: bool = Field(True, alias="FAST_PATH")
    # "json": one JSON object per log line, refusals and errors with route, status and reason (serving/logs.py).
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT")
    # A second imported model (Bento tag) scoring every accepted request in the shadow
    # (serving/shadow.py), and how many answered requests may wait for it before some are dropped.
    shadow_model_tag: str | None = Field(None, alias="SHADOW_MODEL_TAG")
    shadow_queue_size: int = Field(1000, alias="SHADOW_QUEUE_SIZE", gt=0)
    # Threads the model of one worker may use for a large request (the tree forms, slices of its
    # rows: serving/forms RowSlices); 0: the cores this process may use, shared among the workers.
    model_threads: int = Field(0, alias="MODEL_THREADS", ge=0)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity and its container's CPU quota (cgroups)."""
    import joblib  # loky's count, which reads the quota that os.cpu_count() does not

    return max(1, joblib.cpu_count())


def model_threads(settings: Settings, *, workers: int) -> int:
    """MODEL_THREADS, else this worker's share of the cores the process may use."""
    return settings.model_threads or max(1, usable_cores() // workers)


class InvalidSettings(ValueError):
    """A variable of the environment the service cannot take; the message names each, in one line."""


@lru_cache
def get_settings() -> Settings:
    """The process-wide service settings, read from the environment once; InvalidSettings if one is wrong."""
    try:
        return Settings()
    except ValidationError as error:
        # One line naming the variable and the value, never pydantic's multi-line report (API_KEY is
        # a plain string: it cannot fail, so no secret is ever echoed here).
        problems = [f"{'.'.join(map(str, e['loc']))}={e['input']!r}: {e['msg']}" for e in error.errors()]
        raise InvalidSettings(f"invalid service setting: {'; '.join(problems)}") from None
