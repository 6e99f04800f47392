"""Roll the registry's production version out to the replicas behind the balancer, one at a time, without a failed request."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from release.compose_stack import ComposeStack
from release.image import REPO_ROOT
from release.importer import bento_tag, download_version, import_production, resolve_production
from release.replicas import Replica, RolloutFailed, Stack, Target, VerificationFailed
from release.verify import TOLERANCE, probe_rows
from serving.layout import EVALUATION_ROWS_FILE, MLFLOW_MODEL_DIR, SCHEMA_FILE
from serving.schema import TableSchema
from training.artifact_store import translated
from training.cli import CommandError, configure_logging, run_command
from training.config import Settings, get_settings
from training.tracking import connect

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """The run's held-out rows and the registry model's answers on them."""

    records: list[dict]
    class_names: list[str]
    probabilities: np.ndarray

    def check(self, answer: dict) -> str:
        """Why a /predict answer differs from the registry model's (empty: it does not)."""
        predictions = answer.get("predictions") or []
        if len(predictions) != len(self.records):
            return f"{len(predictions)} predictions for {len(self.records)} rows"
        got = np.array([[p["probabilities"].get(name, np.nan) for name in self.class_names] for p in predictions])
        labels = [p["label"] for p in predictions]
        expected = [self.class_names[i] for i in self.probabilities.argmax(axis=1)]
        differ = sum(a != b for a, b in zip(labels, expected))
        largest = float(np.nanmax(np.abs(got - self.probabilities))) if not np.isnan(got).any() else float("inf")
        if differ or largest > TOLERANCE:
            return (f"{differ} of {len(labels)} held-out labels differ from the registry model's, largest "
                    f"probability difference {largest:.3g} (tolerance {TOLERANCE:g})")
        return ""


def find_target(settings: Settings) -> Target:
    """The registry's @production version (one line if there is none)."""
    import mlflow

    connect(settings)
    with translated(tracking_uri=settings.tracking_uri):
        production = resolve_production(mlflow.MlflowClient(), name=settings.registered_model_name,
                                        alias=settings.production_alias, fallback_to_stage=False)
    return Target(version=production.version, run_id=production.run_id,
                  bento_tag=bento_tag(settings, production))


def registry_answers(target: Target, settings: Settings) -> Probe:
    """Download the registered model and its run's held-out rows; what the model answers on them."""
    import mlflow.sklearn

    connect(settings)
    production = resolve_production(mlflow.MlflowClient(), name=settings.registered_model_name,
                                    alias=settings.production_alias, fallback_to_stage=False)
    if production.version != target.version:
        raise RolloutFailed(f"@{settings.production_alias} moved to version {production.version} during the "
                            f"rollout of {target.version}; run it again")
    with tempfile.TemporaryDirectory(prefix="rollout-") as tmp:
        work = Path(tmp)
        with translated(tracking_uri=settings.tracking_uri):
            download_version(production, work, tracking_uri=settings.tracking_uri)
        pipeline = mlflow.sklearn.load_model(str(work / MLFLOW_MODEL_DIR))
        schema = TableSchema.from_dict(json.loads((work / SCHEMA_FILE).read_text()))
        rows = json.loads((work / EVALUATION_ROWS_FILE).read_text())
    records = [dict(zip(rows["columns"], row)) for row in rows["data"]]
    table = probe_rows(rows, schema)  # the held-out rows, then two extra rows the import also checks
    probabilities = np.asarray(pipeline.predict_proba(table.to_frame(schema)), dtype=np.float64)[:len(records)]
    return Probe(records=records, class_names=list(schema.class_names), probabilities=probabilities)


@dataclass
class Rollout:
    """One rollout of target onto stack; `say` reports each step in one line."""

    stack: Stack
    target: Target
    ready_timeout: float = 180.0
    say: Callable[[str], None] = logger.info

    @property
    def headers(self) -> dict[str, str]:
        # The scoring routes need the key when the replicas were started with one (compose passes
        # API_KEY through from the same shell).
        key = os.environ.get("API_KEY")
        return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def served_tag(self, replica: Replica) -> str:
        """The Bento tag a replica serves, from its /metadata ("" if it does not answer)."""
        status, body = self.stack.call(replica, "GET", "/metadata", None, self.headers)
        try:
            return json.loads(body).get("bento_tag", "") if status == 200 else ""
        except ValueError:
            return ""

    def plan(self) -> tuple[list[Replica], list[Replica]]:
        """The replicas in rotation, and those of them that serve anything but the target."""
        rotation = self.stack.rotation()
        return rotation, [r for r in rotation if self.served_tag(r) != self.target.bento_tag]

    def wait_ready(self, replica: Replica) -> None:
        """Until /readyz answers 200; VerificationFailed if the replica dies or takes too long."""
        deadline = time.monotonic() + self.ready_timeout
        while self.stack.call(replica, "GET", "/readyz", None, {})[0] != 200:
            if not self.stack.alive(replica):
                raise VerificationFailed(f"the new replica {replica.name} of version {self.target.version} "
                                         f"stopped before it was ready (see its log)")
            if time.monotonic() > deadline:
                raise VerificationFailed(f"the new replica {replica.name} of version {self.target.version} "
                                         f"was not ready in {self.ready_timeout:.0f} s (see its log)")
            time.sleep(0.5)  # a poll, not a measured duration

    def verify(self, replica: Replica, probe: Probe) -> None:
        """Ready, serving the target, and answering the held-out rows as the registry model does."""
        self.wait_ready(replica)
        served = self.served_tag(replica)
        if served != self.target.bento_tag:
            raise VerificationFailed(f"the new replica {replica.name} serves {served or 'nothing'}, "
                                     f"not {self.target.bento_tag}")
        status, body = self.stack.call(replica, "POST", "/predict", json.dumps({"records": probe.records}).encode(),
                                       self.headers)
        why = f"/predict answered {status}: {body[:200].decode(errors='replace')}" if status != 200 else \
            probe.check(json.loads(body))
        if why:
            raise VerificationFailed(f"the new replica {replica.name} of version {self.target.version} failed "
                                     f"verification: {why}")

    def run(self, probe: Probe, plan: tuple[list[Replica], list[Replica]] | None = None) -> None:
        """Spare in, then each stale slot out, recreated, verified and back in; the spare out last."""
        rotation, stale_replicas = plan or self.plan()  # plan: what the caller found just now
        stale = {r.name for r in stale_replicas}
        spare = self.stack.start_spare(self.target)
        self.say(f"started {spare.name} with version {self.target.version}; verifying it")
        try:
            self.verify(spare, probe)
        except BaseException:
            self.stack.remove(spare)
            raise
        # `ready` serves the target, verified, out of rotation: it takes the next stale slot's place.
        ready = spare
        for old in [r for r in rotation if r.name in stale]:
            rotation = [ready if r == old else r for r in rotation]
            self.stack.rotate(rotation)
            self.say(f"{ready.name} in rotation, {old.name} out (its requests finished); recreating it")
            ready = self.stack.recreate(old, self.target)
            try:
                self.verify(ready, probe)
            except VerificationFailed as error:
                raise VerificationFailed(f"{error}; in rotation now: {', '.join(r.name for r in rotation)}") from None
        rotation = [ready if r == spare else r for r in rotation]
        self.stack.rotate(rotation)
        self.stack.remove(spare)
        self.say(f"{ready.name} in rotation, {spare.name} removed: every replica serves version "
                 f"{self.target.version} ({self.target.bento_tag})")


def roll_out(stack: Stack, *, settings: Settings | None = None, dry_run: bool = False,
             ready_timeout: float = 180.0, say: Callable[[str], None] = logger.info) -> bool:
    """Bring every replica to @production; False when they all served it already."""
    settings = settings or get_settings()
    target = find_target(settings)
    rollout = Rollout(stack, target, ready_timeout=ready_timeout, say=say)
    if dry_run:
        _, stale = rollout.plan()
        say(f"would roll version {target.version} ({target.bento_tag}) out to "
            f"{', '.join(r.name for r in stale)}, one at a time, through one spare replica" if stale else
            f"every replica serves version {target.version} ({target.bento_tag}) already: nothing to do")
        return False
    imported = import_production(alias=settings.production_alias, settings=settings)
    if imported.tag != target.bento_tag:
        raise RolloutFailed(f"@{settings.production_alias} moved during the rollout ({imported.tag}); run it again")
    plan = rollout.plan()
    if not plan[1]:
        say(f"every replica serves version {target.version} ({target.bento_tag}) already: nothing to do")
        return False
    stack.prepare(target)
    rollout.run(registry_answers(target, settings), plan)
    return True


def watch(stack: Stack, *, every: float, stop: threading.Event, settings: Settings | None = None,
          ready_timeout: float = 180.0, say: Callable[[str], None] = logger.info) -> None:
    """roll_out whenever @production moves, checking every `every` seconds, until stop is set."""
    settings = settings or get_settings()
    refused = ""  # a version that failed verification is not tried again until @production moves
    while not stop.is_set():
        tag = ""
        try:
            tag = find_target(settings).bento_tag
            if tag != refused:
                roll_out(stack, settings=settings, ready_timeout=ready_timeout, say=say)
        except VerificationFailed as error:
            refused = tag
            say(f"{error.prefix}{error}; watching for the next version")
        except CommandError as error:
            say(f"{error.prefix}{error}")
        stop.wait(every)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command's options: what to do, and which compose stack."""
    parser = argparse.ArgumentParser(prog="python scripts/rollout.py", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, and do nothing")
    parser.add_argument("--watch", type=float, metavar="SECONDS", default=None,
                        help="keep checking the registry every SECONDS and roll out whenever @production moves")
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE") or "docker",
                        help="docker or podman (default: $CONTAINER_ENGINE, else docker)")
    parser.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME") or REPO_ROOT.name.lower(),
                        help="the compose project (default: $COMPOSE_PROJECT_NAME, else the repo folder's name)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, metavar="SECONDS",
                        help="how long a new replica may take to be ready (default: 180)")
    args = parser.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        parser.error("--watch needs a number of seconds above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`make rollout`); returns the exit code."""
    args = parse_args(argv)
    configure_logging()
    stack = ComposeStack(engine=args.engine, project=args.project)
    if args.watch is None:
        return run_command(lambda: roll_out(stack, dry_run=args.dry_run, ready_timeout=args.ready_timeout) and 0,
                           failure="rollout failed")
    stop = threading.Event()
    try:
        watch(stack, every=args.watch, stop=stop, ready_timeout=args.ready_timeout)
    except KeyboardInterrupt:
        stop.set()
    return 0
