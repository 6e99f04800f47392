"""Import the production model of the registry into the BentoML model store, in its fastest verified form.

    python scripts/import_production.py [--alias production] [--form auto|linear|onnx|compiled|sklearn]

The pipeline is converted into each served form in turn, fastest first (serving/forms/); the
first whose answers on the run's held-out rows equal the registered model's `predict_proba`
(identical labels, probabilities within 1e-6) is kept. The `sklearn` form, the pipeline
itself, always qualifies. The Bento model is written in a staging folder beside the store and
renamed into it in one step, so an import that fails or is killed leaves the store as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from training.config import (
    EVALUATION_ROWS_ARTIFACT,
    FEATURE_STATS_ARTIFACT,
    METRICS,
    SCALER_ARTIFACT,
    SCHEMA_ARTIFACT,
    Settings,
    get_settings,
)
from serving.errors import one_line
from serving.forms import FORMS, Unsupported, convert, load_predictor
from serving.schema import Table, TableSchema
from training.cli import configure_logging as configure_cli_logging
from training.tracking import TrackingUnavailable, connect

logger = logging.getLogger(__name__)

# Files of the Bento model, relative to its folder.
MLFLOW_MODEL_DIR = "mlflow_model"
SCALER_FILE = "scaler.skops"
SCHEMA_FILE = "schema.json"
FEATURE_STATS_FILE = "feature_stats.json"
EVALUATION_ROWS_FILE = "evaluation_rows.json"
STAGING_PREFIX = ".import-staging-"
# A served form must give the registered model's labels and its probabilities to within this.
TOLERANCE = 1e-6
# Test hook: IMPORT_PAUSE_AT=<step> makes the import stop for good at that step (see pause_point).
PAUSE_ENV = "IMPORT_PAUSE_AT"
PAUSE_STEPS = ("downloaded", "converted", "staged", "publishing", "published")


class ImportFailed(RuntimeError):
    """The production model cannot be imported; the message says why in one line."""


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


@dataclass(frozen=True)
class FormCheck:
    """The chosen served form and the evidence that it answers like the registered model."""

    form: str
    rows: int
    max_abs_diff: float
    tried: dict[str, str]  # form -> why it was passed over, for every faster form

    def to_dict(self) -> dict:
        return {"form": self.form, "rows": self.rows, "max_abs_diff": self.max_abs_diff,
                "tolerance": TOLERANCE, "passed_over": self.tried}


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


def pause_point(step: str) -> None:
    """Test hook: with IMPORT_PAUSE_AT=<step>, say so on stderr and block until killed.

    Lets a test kill the import at a named step (PAUSE_STEPS) deterministically, with no timer:
    it waits for the line `IMPORT_PAUSE_AT: paused at <step>` and then sends SIGKILL. Unset
    (always, outside tests) it costs one environment lookup per step.
    """
    if os.environ.get(PAUSE_ENV) == step:
        sys.stderr.write(f"{PAUSE_ENV}: paused at {step}\n")
        sys.stderr.flush()
        threading.Event().wait()


def bento_tag(settings: Settings, production: ProductionVersion) -> str:
    """A tag that names the registry version and run, so a re-import finds it."""
    return f"{settings.bento_model_name}:v{production.version}-{production.run_id[:12]}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_version(production: ProductionVersion, directory: Path) -> None:
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
        raise ImportFailed(f"artifact missing for {production.name} version {production.version}: "
                           f"{one_line(error)}") from None
    shutil.rmtree(directory / "run", ignore_errors=True)


def check_and_convert(production: ProductionVersion, directory: Path, *,
                      form: str = "auto") -> tuple[TableSchema, FormCheck]:
    """Check the run's files belong to the model, then write the fastest form that verifies."""
    import mlflow.sklearn
    import numpy as np
    import skops.io
    import yaml

    model_dir = directory / MLFLOW_MODEL_DIR
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    if mlmodel.get("run_id") not in (None, production.run_id):
        raise ImportFailed(f"version {production.version} was logged by run {mlmodel['run_id']}, "
                           f"not by {production.run_id}")
    pipeline = mlflow.sklearn.load_model(str(model_dir))
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


def probe_rows(rows: dict, schema: TableSchema) -> Table:
    """The run's held-out rows, plus one row with every value missing and one of unseen text.

    The two extra rows reach paths the held-out rows may miss: imputing every column, and
    text the one-hot encoder never saw.
    """
    import numpy as np

    records = [dict(zip(rows["columns"], row)) for row in rows["data"]]
    records += [{}, {name: "\u2400 unseen" for name in schema.categorical}]
    numeric = [[np.nan if r.get(name) is None else r[name] for name in schema.numeric] for r in records]
    text = [[r.get(name) for name in schema.categorical] for r in records]
    return Table(numeric=np.array(numeric, dtype=np.float64).reshape(len(records), len(schema.numeric)),
                 categorical=np.array(text, dtype=object).reshape(len(records), len(schema.categorical)))


def choose_form(pipeline, schema: TableSchema, table: Table, *, directory: Path,
                forms: tuple[str, ...]) -> FormCheck:
    """Save the first form, in the order given, that reproduces the pipeline on the table's rows."""
    import numpy as np

    expected = np.asarray(pipeline.predict_proba(table.to_frame(schema)), dtype=np.float64)
    tried: dict[str, str] = {}
    for form in forms:
        try:
            candidate = convert(form, pipeline, schema)
        except Unsupported as error:
            tried[form] = f"unsupported: {error}"
            continue
        # Judge the form as the service will read it: saved, then loaded back from the files.
        trial = directory / f".form-{form}"
        trial.mkdir()
        shutil.copytree(directory / MLFLOW_MODEL_DIR, trial / MLFLOW_MODEL_DIR)
        candidate.save(trial)
        answered = load_predictor(form, trial, schema).predict_proba(table)
        diff = float(np.max(np.abs(answered - expected))) if answered.shape == expected.shape else float("inf")
        same_labels = answered.shape == expected.shape and \
            np.array_equal(answered.argmax(axis=1), expected.argmax(axis=1))
        if same_labels and diff <= TOLERANCE:
            shutil.rmtree(trial)
            candidate.save(directory)
            return FormCheck(form=form, rows=len(table), max_abs_diff=diff, tried=tried)
        shutil.rmtree(trial)
        tried[form] = f"differs from the model: largest difference {diff:.3g}, labels {'equal' if same_labels else 'differ'}"
    raise ImportFailed(f"no served form reproduces the model ({'; '.join(f'{k}: {v}' for k, v in tried.items())})")


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
    production = resolve_production(client, name=settings.registered_model_name, alias=alias,
                                    fallback_to_stage=not asked_for)
    tag = bento_tag(settings, production)
    from bentoml._internal.tag import Tag

    store_root = _model_store_path()
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    else:
        # Already in the store, perhaps from an import killed between publishing and `latest`:
        # finish that one's work, so `latest` is the production version either way.
        _remove_stale_staging(store_root.parent)
        point_latest(store_root, Tag.from_taglike(tag))
        return ImportResult(tag=tag, created=False, seconds=time.perf_counter() - started)
    _remove_stale_staging(store_root.parent)
    with tempfile.TemporaryDirectory(prefix="import-") as tmp:
        work = Path(tmp)
        download_version(production, work)
        pause_point("downloaded")
        schema, check = check_and_convert(production, work, form=form)
        pause_point("converted")
        run = client.get_run(production.run_id)
        labels, metadata = describe(production, run=run, schema=schema, check=check, alias=alias,
                                    settings=settings, directory=work)
        save_atomically(tag, source=work, labels=labels, metadata=metadata, store_root=store_root)
    return ImportResult(tag=tag, created=True, seconds=time.perf_counter() - started, form=check.form)


def describe(production: ProductionVersion, *, run, schema: TableSchema, check: FormCheck, alias: str,
             settings: Settings, directory: Path) -> tuple[dict[str, str], dict]:
    """Labels (strings, for filtering) and metadata (lineage, metrics, names, hashes)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    hashes = {str(p.relative_to(directory)): sha256_of(p) for p in files}
    dataset = run.data.params.get("dataset_name", "")
    labels = {
        "registered_model": production.name,
        "registered_version": production.version,
        "alias": alias,
        "resolved_by": production.resolved_by.replace(" ", "-").lstrip("@"),
        "run_id": production.run_id,
        "dataset": dataset,
        "served_form": check.form,
    }
    metadata = {
        "registered_model": production.name,
        "version": production.version,
        "alias": alias,
        "run_id": production.run_id,
        "dataset": dataset,
        "metrics": {m: run.data.metrics[m] for m in METRICS if m in run.data.metrics},
        "params": dict(run.data.params),
        "feature_names": schema.feature_names,
        "class_names": list(schema.class_names),
        "schema": schema.to_dict(),
        "served_form": check.form,
        "form_check": check.to_dict(),
        # /version answers this, as `mlflow models serve` answers the MLflow it runs.
        "mlflow_version": _mlflow_version(directory),
        "sha256": hashes,
        "tracking_uri": settings.tracking_uri if settings.is_remote else "local",
        "run_url": (f"{settings.tracking_uri.rstrip('/')}/#/experiments/"
                    f"{run.info.experiment_id}/runs/{production.run_id}") if settings.is_remote else "",
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return labels, metadata


def _mlflow_version(directory: Path) -> str:
    """The MLflow version that logged the model, from its MLmodel file."""
    import yaml

    return str(yaml.safe_load((directory / MLFLOW_MODEL_DIR / "MLmodel").read_text()).get("mlflow_version", ""))


def _model_store_path() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    try:
        return Path(BentoMLContainer.model_store.get()._path)
    except OSError as error:  # BentoML creates its home's folders on first use
        raise ImportFailed(f"cannot write to the BentoML store at {error.filename or 'BENTOML_HOME'}: "
                           f"{error.strerror or error}") from None


def _remove_stale_staging(home: Path) -> None:
    """Clear what an import killed mid-way left behind; it is outside the store proper."""
    for stale in home.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def save_atomically(tag: str, *, source: Path, labels: dict[str, str], metadata: dict,
                    store_root: Path) -> None:
    """Build the Bento model in a staging store, then rename it into the real one."""
    import bentoml
    from bentoml._internal.models.model import ModelStore
    from bentoml._internal.tag import Tag

    staging = store_root.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        staging.mkdir(parents=True)
        with bentoml.models.create(tag, labels=labels, metadata=metadata,
                                   _model_store=ModelStore(staging)) as model:
            shutil.copytree(source, model.path, dirs_exist_ok=True)
        pause_point("staged")
        parsed = Tag.from_taglike(tag)
        final = store_root / parsed.name / parsed.version
        final.parent.mkdir(parents=True, exist_ok=True)
        pause_point("publishing")
        os.rename(staging / parsed.name / parsed.version, final)  # the one step that publishes
        pause_point("published")
        point_latest(store_root, parsed)
    except OSError as error:
        raise ImportFailed(f"cannot write to the BentoML store at {store_root}: "
                           f"{error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def point_latest(store_root: Path, tag) -> None:
    """Make `name:latest` resolve to this tag, in one atomic replace."""
    latest = store_root / tag.name / "latest"
    latest_tmp = latest.with_name(f".latest-{uuid.uuid4().hex}")
    latest_tmp.write_text(tag.version)
    os.replace(latest_tmp, latest)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python scripts/import_production.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alias", default=None,
                        help="registry alias to import (default: production, falling back to the "
                             "Production stage; an alias given here must exist)")
    parser.add_argument("--form", choices=("auto", *FORMS), default="auto",
                        help="served form: auto (the fastest that verifies, default) or one to insist on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    configure_cli_logging()
    try:
        result = import_production(alias=args.alias, form=args.form)
    except (ImportFailed, TrackingUnavailable) as error:
        logger.error("error: %s", one_line(error))
        return 1
    except Exception as error:  # noqa: BLE001 - a CLI answers in one line, never a traceback
        logger.error("error: import failed: %s", one_line(error))
        return 1
    verb = "imported" if result.created else "already imported"
    form = f", served form {result.form}" if result.form else ""
    logger.info("%s %s (%.1f s%s)", verb, result.tag, result.seconds, form)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
