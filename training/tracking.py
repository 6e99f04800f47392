"""Connect to the MLflow tracking store and fail fast, in one line, when it is not there."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from training.cli import CommandError
from training.config import Settings


class TrackingUnavailable(CommandError):
    """The tracking server cannot be reached."""


def check_reachable(settings: Settings) -> None:
    """Raise TrackingUnavailable unless a remote tracking server answers its health check."""
    if not settings.is_remote:
        return
    url = settings.tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=settings.connect_timeout) as response:
            answer = response.read(64)
            # MLflow's /health says "OK"; any other page means another server holds the address,
            # whose pages MLflow's client would report as a JSON error without naming it.
            if response.status == 200 and answer.strip() == b"OK":
                return
            if response.status == 200:
                raise TrackingUnavailable(
                    f"{settings.tracking_uri} answers, but not as an MLflow tracking server "
                    f"(its /health gave {answer.decode('utf-8', 'replace').strip()[:30]!r}, not 'OK')")
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        reason = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
    raise TrackingUnavailable(
        f"MLflow tracking server {settings.tracking_uri} is unreachable ({reason})"
    )


def connect(settings: Settings) -> None:
    """Point the mlflow client at the configured store after checking that it answers."""
    import mlflow

    # Without this a dead server costs minutes of retries before the first error.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    check_reachable(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def ensure_experiment(settings: Settings) -> str:
    """Return the experiment id, creating it with a known artifact folder on a local store."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = settings.local_artifact_root
    location = None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.resolve().as_uri()
    return mlflow.create_experiment(settings.experiment_name, artifact_location=location)
