"""Import the registry's production model into the BentoML model store, in the fastest served form that answers as it does."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from release import ImportFailed
from release.bento_store import model_store_path, pause_point, point_latest, publish, remove_stale_staging
from release.verify import FormCheck, choose_form, probe_rows
from serving.errors import one_line
from serving.forms import FORMS
from serving.layout import (EVALUATION_ROWS_FILE, FEATURE_STATS_FILE, MLFLOW_MODEL_DIR, SCALER_FILE, SCHEMA_FILE,
                            read_mlmodel, record_sha256)
from serving.schema import TableSchema
from training.artifact_store import check_artifact_store, describe_failure, translated
from training.cli import configure_logging, run_command
from training.config import (EVALUATION_ROWS_ARTIFACT, FEATURE_STATS_ARTIFACT, METRICS, SCALER_ARTIFACT,
                             SCHEMA_ARTIFACT, Settings, get_settings)
from training.tracking import connect

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProductionVersion:
    """The registry version to import and how it was found."""

    name: str
    version: str
    run_id: str
    resolved_by: str  # "@production" or "stage Production"


@dataclass(frozen=True)
class ImportResult:
    """The Bento model tag, whether this call created it, and the form it serves."""

    tag: str
    created: bool
    seconds: float
    form: str = ""


def resolve_production(client, *, name: str, alias: str, fallback_to_stage: bool = True) -> ProductionVersion:
    """The alias target, else (unless an alias was asked for) the highest version in stage Production."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
        resolved_by = f"@{alias}"
    except MlflowException:
        if not fallback_to_stage:
            raise ImportFailed(f"{name} has no alias @{alias}") from None
        staged = [v for v in client.search_model_versions(f"name = '{name}'")
                  if v.current_stage == "Production"]
        if not staged:
            raise ImportFailed(f"no production version of {name}: run `python -m training.promote`") from None
        version = max(staged, key=lambda v: int(v.version))
        resolved_by = "stage Production"
    if not version.run_id:
        raise ImportFailed(f"{name} version {version.version} has no run to take the scaler from")
    return ProductionVersion(name=name, version=str(version.version), run_id=version.run_id,
                             resolved_by=resolved_by)


def bento_tag(settings: Settings, production: ProductionVersion) -> str:
    """A tag that names the registry version and run, so a re-import finds it."""
    return f"{settings.bento_model_name}:v{production.version}-{production.run_id[:12]}"


def download_version(production: ProductionVersion, directory: Path, *, location: str = "",
                     tracking_uri: str = "") -> None:
    """Fetch the registered model and the same run's scaler, schema and feature statistics."""
    import mlflow

    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{production.name}/{production.version}",
            dst_path=str(directory / MLFLOW_MODEL_DIR))
        for artifact, local in ((SCALER_ARTIFACT, SCALER_FILE), (SCHEMA_ARTIFACT, SCHEMA_FILE),
                                (FEATURE_STATS_ARTIFACT, FEATURE_STATS_FILE),
                                (EVALUATION_ROWS_ARTIFACT, EVALUATION_ROWS_FILE)):
            fetched = mlflow.artifacts.download_artifacts(
                run_id=production.run_id, artifact_path=artifact, dst_path=str(directory / "run"))
            shutil.move(fetched, directory / local)
    except Exception as error:  # noqa: BLE001 - each store raises its own kind
        # The object store down or refusing us is not a missing artifact: it has a code of its own.
        found = describe_failure(error, location=location, tracking_uri=tracking_uri)
        if found is not None:
            raise found from None
        # MLflow 3.17 reports any failed runs:/ download as a wrong path (the cause only in a debug
        # log): a store that went down during the import must not read as a missing artifact.
        if location:
            check_artifact_store(location, tracking_uri=tracking_uri)
        raise ImportFailed(f"artifact missing for {production.name} version {production.version}: "
                           f"{one_line(error)}") from None
    shutil.rmtree(directory / "run", ignore_errors=True)


def check_and_convert(production: ProductionVersion, directory: Path, *,
                      form: str = "auto") -> tuple[TableSchema, FormCheck]:
    """Check the run's files belong to the model, then write the fastest form that verifies."""
    import mlflow.sklearn
    import numpy as np
    import skops.io

    mlmodel = read_mlmodel(directory)
    if mlmodel.get("run_id") not in (None, production.run_id):
        raise ImportFailed(f"version {production.version} was logged by run {mlmodel['run_id']}, "
                           f"not by {production.run_id}")
    pipeline = mlflow.sklearn.load_model(str(directory / MLFLOW_MODEL_DIR))
    try:
        path = directory / SCALER_FILE
        preprocess = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    except Exception as error:  # noqa: BLE001 - a corrupt file can fail in many ways
        raise ImportFailed(f"the scaler artifact (the preprocessing) of run {production.run_id} is "
                           f"unreadable: {one_line(error)}") from None
    schema = TableSchema.from_dict(json.loads((directory / SCHEMA_FILE).read_text()))
    table = probe_rows(json.loads((directory / EVALUATION_ROWS_FILE).read_text()), schema)
    frame = table.to_frame(schema)
    inner = getattr(pipeline, "named_steps", {}).get("preprocess")
    try:
        same = inner is not None and np.array_equal(preprocess.transform(frame), inner.transform(frame))
    except Exception:  # noqa: BLE001 - one fitted for other columns fails as the other sklearn objects do
        same = False
    if not same:
        raise ImportFailed(f"the scaler artifact (the preprocessing) of run {production.run_id} is not "
                           f"the one inside the model")
    if len(schema.class_names) != len(pipeline.classes_):
        raise ImportFailed("the class names do not match the model's classes")
    check = choose_form(pipeline, schema, table, directory=directory,
                        forms=FORMS if form == "auto" else (form,))
    return schema, check


def import_production(*, alias: str | None = None, form: str = "auto",
                      settings: Settings | None = None) -> ImportResult:
    """Import the production version into the BentoML store, once; return its tag."""
    import bentoml
    import mlflow

    started = time.perf_counter()
    settings = settings or get_settings()
    asked_for = alias is not None
    alias = alias or settings.production_alias
    connect(settings)
    client = mlflow.MlflowClient()
    with translated(tracking_uri=settings.tracking_uri):
        production = resolve_production(client, name=settings.registered_model_name, alias=alias,
                                        fallback_to_stage=not asked_for)
    tag = bento_tag(settings, production)
    store_root = model_store_path()
    remove_stale_staging(store_root)
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    else:
        # Already in the store, perhaps from an import killed between publishing and `latest`:
        # finish that one's work, so `latest` is the production version either way.
        point_latest(store_root, tag)
        return ImportResult(tag=tag, created=False, seconds=time.perf_counter() - started)
    run = client.get_run(production.run_id)
    check_artifact_store(run.info.artifact_uri, tracking_uri=settings.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="import-") as tmp:
        work = Path(tmp)
        download_version(production, work, location=run.info.artifact_uri, tracking_uri=settings.tracking_uri)
        pause_point("downloaded")
        schema, check = check_and_convert(production, work, form=form)
        pause_point("converted")
        labels, metadata = describe(production, run=run, schema=schema, check=check, alias=alias,
                                    settings=settings, directory=work)
        publish(tag, source=work, labels=labels, metadata=metadata, store_root=store_root)
    return ImportResult(tag=tag, created=True, seconds=time.perf_counter() - started, form=check.form)


def describe(production: ProductionVersion, *, run, schema: TableSchema, check: FormCheck, alias: str,
             settings: Settings, directory: Path) -> tuple[dict[str, str], dict]:
    """Labels (strings, for filtering) and metadata (lineage, metrics, names, hashes)."""
    dataset = run.data.params.get("dataset_name", "")
    labels = {"registered_model": production.name, "registered_version": production.version, "alias": alias,
              "resolved_by": production.resolved_by.replace(" ", "-").lstrip("@"), "run_id": production.run_id,
              "dataset": dataset, "served_form": check.form}
    metadata = {
        "registered_model": production.name, "version": production.version, "alias": alias,
        "run_id": production.run_id, "dataset": dataset,
        "metrics": {m: run.data.metrics[m] for m in METRICS if m in run.data.metrics},
        "params": dict(run.data.params),
        "feature_names": schema.feature_names, "class_names": list(schema.class_names),
        "schema": schema.to_dict(),
        "served_form": check.form,
        "form_check": check.to_dict(),
        # /version answers this, as `mlflow models serve` answers the MLflow it runs.
        "mlflow_version": str(read_mlmodel(directory).get("mlflow_version", "")),
        "sha256": record_sha256(directory),
        "tracking_uri": settings.tracking_uri if settings.is_remote else "local",
        "run_url": (f"{settings.tracking_uri.rstrip('/')}/#/experiments/"
                    f"{run.info.experiment_id}/runs/{production.run_id}") if settings.is_remote else "",
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return labels, metadata


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command's options: which alias to import, and in which served form."""
    parser = argparse.ArgumentParser(prog="python scripts/import_production.py", description=__doc__)
    parser.add_argument("--alias", default=None,
                        help="registry alias to import (default: production, falling back to the "
                             "Production stage; an alias given here must exist)")
    parser.add_argument("--form", choices=("auto", *FORMS), default="auto",
                        help="served form: auto (default: the fastest whose answers equal the model's, same "
                             "labels and probabilities within 1e-6; sklearn always does) or one to insist on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    configure_logging()

    def work() -> None:
        result = import_production(alias=args.alias, form=args.form)
        verb = "imported" if result.created else "already imported"
        form = f", served form {result.form}" if result.form else ""
        logger.info("%s %s (%.1f s%s)", verb, result.tag, result.seconds, form)

    return run_command(work, failure="import failed")


if __name__ == "__main__":
    raise SystemExit(main())
