"""Promote the best registered version: alias `production` plus the legacy `Production` stage.

    python -m training.promote [--metric f1] [--dataset iris] [--min-score X] [--force]
                               [--allow-schema-change]

The rule: among the versions trained on one dataset (default: that of the newest version),
and on the same data (the same sha256: scores on different test sets do not compare), the
highest value of the metric wins, whatever the model family; ties go to the earliest version. If the version that
holds the alias already scores at least as well it stays, unless --force. A best score below
--min-score is refused and nothing changes. So is a winner whose input schema (feature
names, types, categories) or classes differ from the production version's: every client of
the service would break; --allow-schema-change accepts it.

Exit codes: 0 promoted or kept, 1 error (nothing to promote, tracking store unreachable),
2 usage error (bad arguments), 3 refused (--min-score, or a schema change), 7 login refused,
8 not permitted (a read-only user); see training/artifact_store.py.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone

from training.artifact_store import translated
from training.cli import CommandError, configure_logging, run_command
from training.config import METRICS, SCHEMA_ARTIFACT, Settings, get_settings
from training.tracking import connect

logger = logging.getLogger(__name__)

PRODUCTION_STAGE = "Production"
EXIT_REFUSED = 3  # 2 is argparse's usage error


class PromotionError(CommandError):
    """Nothing can be promoted (no versions, no metric)."""


class PromotionRefused(PromotionError):
    """The best candidate does not reach the required score."""

    exit_code = EXIT_REFUSED
    prefix = ""  # the message starts with "refused: "


@dataclass(frozen=True)
class Candidate:
    """A registered version and its score on the chosen metric."""

    version: str
    run_id: str
    dataset: str
    score: float


@dataclass(frozen=True)
class PromotionResult:
    """What promote_best decided."""

    promoted: bool
    version: str
    score: float
    previous: str | None
    message: str


def _client():
    import mlflow

    # Stages are deprecated in MLflow 3 but older clients still read them; keep the noise out.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*[Ss]tages")
    return mlflow.MlflowClient()


def list_candidates(client, *, name: str, metric: str, dataset: str | None) -> list[Candidate]:
    """Every version of the model on the dataset that has the metric, oldest first."""
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise PromotionError(f"no registered versions of {name}; run `python -m training.experiments` first")
    versions = sorted(versions, key=lambda v: int(v.version))
    if dataset is None:
        dataset = versions[-1].tags.get("dataset")
    on_dataset = [v for v in versions if v.tags.get("dataset") == dataset]
    if not on_dataset:
        raise PromotionError(f"no version of {name} was trained on {dataset}")
    # The newest version's data decides: versions of an older copy of the table are left out.
    data_sha256 = on_dataset[-1].tags.get("data_sha256")
    candidates = []
    for version in on_dataset:
        if version.tags.get("data_sha256") != data_sha256 or not version.run_id:
            continue
        run_metrics = client.get_run(version.run_id).data.metrics
        if metric in run_metrics:
            candidates.append(Candidate(version=str(version.version), run_id=version.run_id,
                                        dataset=dataset, score=run_metrics[metric]))
    if not candidates:
        raise PromotionError(f"no version of {name} trained on {dataset} has the metric {metric!r}")
    return candidates


def pick_best(candidates: list[Candidate]) -> Candidate:
    """Highest score; the earliest version wins a tie so that reruns do not flip production."""
    return max(candidates, key=lambda c: (c.score, -int(c.version)))


def current_production(client, *, name: str, alias: str) -> str | None:
    """The version the alias points at, if any."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote_best(
    *,
    metric: str = "f1",
    dataset: str | None = None,
    min_score: float | None = None,
    force: bool = False,
    allow_schema_change: bool = False,
    settings: Settings | None = None,
) -> PromotionResult:
    """Apply the promotion rule and return what was decided."""
    settings = settings or get_settings()
    connect(settings)
    client = _client()
    name, alias = settings.registered_model_name, settings.production_alias
    candidates = list_candidates(client, name=name, metric=metric, dataset=dataset)
    best = pick_best(candidates)
    if min_score is not None and best.score < min_score:
        raise PromotionRefused(
            f"refused: best {metric} is {best.score:.4f} (version {best.version}), "
            f"below --min-score {min_score}"
        )
    previous = current_production(client, name=name, alias=alias)
    scores = {c.version: c.score for c in candidates}
    if previous is not None and not force:
        held = scores.get(previous)
        if previous == best.version or (held is not None and held >= best.score):
            message = (f"kept version {previous} in production: its {metric} {held:.4f} is at "
                       f"least the best candidate's {best.score:.4f} (use --force to replace it)")
            _align_stage(client, name=name, alias=alias)
            return PromotionResult(False, previous, held, previous, message)
    if previous is not None and not allow_schema_change:
        check_same_schema(client, name=name, current=previous, candidate=best)
    apply_promotion(client, name=name, alias=alias, best=best, metric=metric, previous=previous)
    message = (f"promoted {name} version {best.version} ({metric}={best.score:.4f}) to @{alias} "
               f"and stage {PRODUCTION_STAGE}; previous: {previous or 'none'}")
    return PromotionResult(True, best.version, best.score, previous, message)


def check_same_schema(client, *, name: str, current: str, candidate: Candidate) -> None:
    """Refuse a winner that takes other columns or predicts other classes than production."""
    import mlflow

    def schema_of(run_id: str) -> dict:
        document = mlflow.artifacts.load_dict(f"runs:/{run_id}/{SCHEMA_ARTIFACT}")
        return {"features": document.get("features") or document["feature_names"],
                "classes": document["class_names"]}

    held = schema_of(client.get_model_version(name, current).run_id)
    offered = schema_of(candidate.run_id)
    if held != offered:
        what = "classes" if held["features"] == offered["features"] else "input columns"
        raise PromotionRefused(
            f"refused: version {candidate.version} ({candidate.dataset}) takes other {what} than "
            f"production version {current}; clients of the service would break. "
            f"Use --allow-schema-change to promote it anyway")


def apply_promotion(
    client, *, name: str, alias: str, best: Candidate, metric: str, previous: str | None
) -> None:
    """Move the alias and the stage, then record why on the version."""
    for attempt in range(3):
        try:
            client.set_registered_model_alias(name, alias, best.version)
            break
        except Exception:  # noqa: BLE001 - two promotions inserting the alias row at once
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
    _align_stage(client, name=name, alias=alias)
    audit = {
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "promoted_metric": metric,
        "promoted_metric_value": f"{best.score:.6f}",
        "previous_production_version": previous or "none",
        "promoted_by": promoter(),
    }
    for key, value in audit.items():
        client.set_model_version_tag(name, best.version, key, value)


def promoter() -> str:
    """Who promotes: the tracking server's user (MLFLOW_TRACKING_USERNAME), else the local account."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        return user
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # a container user with no name
        return f"local:uid {os.getuid()}"


def _align_stage(client, *, name: str, alias: str) -> None:
    """Put the alias holder in Production and archive any other holder of that stage."""
    # Follow the alias, not the version this process chose: with two promotes at once the
    # last alias write wins, so re-read it until it holds still while the stage is moved.
    for _ in range(5):
        version = current_production(client, name=name, alias=alias)
        if version is None:
            return
        if client.get_model_version(name, version).current_stage != PRODUCTION_STAGE:
            client.transition_model_version_stage(name, version, PRODUCTION_STAGE,
                                                  archive_existing_versions=True)
        for other in client.search_model_versions(f"name = '{name}'"):
            if str(other.version) != version and other.current_stage == PRODUCTION_STAGE:
                client.transition_model_version_stage(name, other.version, "Archived")
        if current_production(client, name=name, alias=alias) == version:
            return


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.promote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metric", choices=METRICS, default="f1")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="compare versions trained on this dataset (default: the newest's)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="refuse (exit 3) if the best version scores below this")
    parser.add_argument("--force", action="store_true",
                        help="promote the best even if production scores as well")
    parser.add_argument("--allow-schema-change", action="store_true",
                        help="promote even if the winner takes other columns or classes than production")
    return parser.parse_args(argv)


def promote_and_report(args: argparse.Namespace) -> None:
    """Apply the promotion rule as the command line asks and say what was decided."""
    with translated(tracking_uri=get_settings().tracking_uri):
        result = promote_best(metric=args.metric, dataset=args.dataset, min_score=args.min_score,
                              force=args.force, allow_schema_change=args.allow_schema_change)
    logger.info("%s", result.message)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    configure_logging()
    return run_command(lambda: promote_and_report(args), failure="promotion failed")


if __name__ == "__main__":
    raise SystemExit(main())
