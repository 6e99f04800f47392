"""A challenger in the shadow: a second imported model that scores every accepted request off the answer's path."""

# The production path only appends to a bounded deque (append and len are atomic under the GIL:
# no lock and no wake-up per request); one daemon thread per worker process drains it every
# POLL_SECONDS, scores each request with the challenger through the same scoring core, and
# compares. Whatever the challenger does (raise, stall), the client's answer is already decided.

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from serving.core import Limits, Scorer
from serving.errors import one_line
from serving.model import LoadedModel, load_model
from serving.monitoring import ShadowMetrics, ShadowScore
from serving.schema import Row, Table

logger = logging.getLogger(__name__)

# How often the worker looks for requests: long enough that what it finds was answered already,
# short enough that /metrics follows the traffic.
POLL_SECONDS = 0.01


def incompatibility(production: LoadedModel, challenger: LoadedModel) -> str | None:
    """Why challenger cannot score production's rows side by side, or None when it can."""
    # Text columns may have seen other categories: the encoder of each model handles its own.
    if [(f.name, f.type) for f in production.schema.features] != \
            [(f.name, f.type) for f in challenger.schema.features]:
        return (f"it takes the columns {challenger.schema.feature_names}, production takes "
                f"{production.schema.feature_names} (same names, types and order needed)")
    if production.class_names != challenger.class_names:
        return f"its classes {challenger.class_names} are not production's {production.class_names}"
    return None


class Shadow:
    """The challenger, its bounded queue of answered requests and the thread that scores them."""

    def __init__(self, tag: str, *, challenger: LoadedModel | None, limits: Limits,
                 queue_size: int = 1000, error: str | None = None) -> None:
        self.tag = tag
        self.error = error
        self.queue_size = queue_size
        self.scorer = Scorer(challenger, limits=limits) if challenger is not None else None
        self.metrics = ShadowMetrics(challenger=tag, class_names=challenger.class_names) \
            if challenger is not None else None
        self._pending: deque = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0

    @property
    def active(self) -> bool:
        return self.scorer is not None

    def offer(self, table: Table, probabilities: np.ndarray, predicted: np.ndarray) -> None:
        """Queue an answered request for the challenger; drop and count it when the queue is full."""
        if len(self._pending) >= self.queue_size:
            self.metrics.dropped.inc()
            return
        self._pending.append((table, probabilities, predicted))

    def offer_row(self, row: Row, probabilities: list[float], predicted: int) -> None:
        """offer() of a one-row request given as Python values."""
        if len(self._pending) >= self.queue_size:
            self.metrics.dropped.inc()
            return
        self._pending.append((row, probabilities, predicted))

    def start(self) -> None:
        """Start this process's worker thread (a daemon: it never holds the process up)."""
        if self.active and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the worker thread after its current pass."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        # A pause after every pass, busy or not: under load the requests then come in batches, and
        # the thread wants the GIL a hundred times a second, not after each request.
        while not self._stop.wait(POLL_SECONDS):
            self.drain()

    def drain(self) -> int:
        """Score every request waiting now with the challenger and count the comparison; how many."""
        taken = []
        while self._pending:
            taken.append(self._pending.popleft())
        if not taken:
            return 0
        rows = [item for item in taken if type(item[0]) is Row]  # one-row requests
        scored = [self._guarded(self._score_table, item, 1) for item in taken if type(item[0]) is not Row]
        if rows:
            scored.append(self._guarded(self._score_rows, rows, len(rows)))
        scored = [score for score in scored if score is not None]
        if scored:
            self.metrics.record(scored)
        return len(taken)

    def _score_table(self, item: tuple) -> ShadowScore:
        """One request of a table, timed: the challenger's latency for that request."""
        table, probabilities, predicted = item
        started = time.perf_counter()
        theirs, chosen = self.scorer.score(table)
        return ShadowScore(probabilities, predicted, theirs, chosen, [time.perf_counter() - started])

    def _score_rows(self, items: list[tuple]) -> ShadowScore:
        """One-row requests: the first on its own and timed (a latency sample), the others in one call."""
        # Scoring them together costs the GIL a fraction of one call each: the thread then leaves
        # the event loop's thread alone (the p99 of the answers is what it must not move).
        first, probabilities, _ = items[0]
        started = time.perf_counter()
        theirs, _ = self.scorer.score_row(first)
        seconds = time.perf_counter() - started
        mine = [probabilities]
        if len(items) > 1:
            rest, rest_probabilities, _ = zip(*items[1:])
            others, _ = self.scorer.score(Table.from_rows(rest))
            mine += rest_probabilities
            theirs_all = np.vstack([np.array([theirs]), others])
        else:
            theirs_all = np.array([theirs])
        return ShadowScore(np.array(mine), np.array([item[2] for item in items]), theirs_all,
                           theirs_all.argmax(axis=1), [seconds])

    def _guarded(self, score, work, requests: int) -> ShadowScore | None:
        """score(work), or None with the failure counted: a challenger's failure stays in the shadow."""
        try:
            return score(work)
        except Exception as error:  # noqa: BLE001 - whatever the challenger raises
            self._failures += 1
            self.metrics.errors.inc(requests)
            if self._failures == 1:  # the first says why; the count says how often
                logger.warning("the challenger %s failed to score (counted in shadow_errors_total, "
                               "logged once): %s", self.tag, one_line(error))
            return None

    def describe(self) -> dict:
        """What /metadata says of the challenger: its lineage, or why it is not scoring."""
        if not self.active:
            return {"bento_tag": self.tag, "status": "not scoring", "error": self.error}
        info = self.scorer.model.info
        return {"bento_tag": self.tag, "status": "scoring", "name": info["name"], "version": info["version"],
                "run_id": info["run_id"], "served_form": info["served_form"], "metrics": info["metrics"],
                "queue_size": self.queue_size}


def load_shadow(tag: str, *, production: LoadedModel, limits: Limits, queue_size: int) -> Shadow:
    """The challenger named by tag, loaded and checked like the production model; never raises.

    A challenger that cannot be loaded, or cannot score production's rows, leaves production
    serving: the shadow then scores nothing and /metadata says why.
    """
    import bentoml

    try:
        stored = bentoml.models.get(tag)
        challenger = load_model(Path(stored.path), stored.info.metadata, tag=str(stored.tag))
        reason = incompatibility(production, challenger)
    except Exception as error:  # noqa: BLE001 - whatever it is, production goes on without it
        challenger, reason = None, one_line(error)
    if reason is not None:
        logger.error("the challenger %s is not scoring: %s", tag, reason)
        return Shadow(tag, challenger=None, limits=limits, queue_size=queue_size, error=reason)
    shadow = Shadow(str(stored.tag), challenger=challenger, limits=limits, queue_size=queue_size)
    logger.info("shadow: challenger %s (%s version %s, %s) scores every answered request", shadow.tag,
                challenger.summary["name"], challenger.summary["version"], challenger.info["served_form"])
    return shadow
