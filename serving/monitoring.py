"""Prometheus metrics beyond BentoML's own: what is predicted, refused, and drift (README "Metrics and drift")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from serving.errors import REASONS

WINDOW_ROWS = 1000  # rows in the rolling PSI window
# The PSI of a handful of rows is noise that reads as an alarm (7 rows gave 5.5-7): the gauges
# appear once the window holds this many rows.
MIN_PSI_ROWS = 200
# Answered requests reach the series this soon after, in one batch: short enough that a batch
# (~0.1 ms, plus ~0.6 us a request) stalls no answer for long.
FLUSH_SECONDS = 0.025
_EPSILON = 1e-4  # keeps empty bins from making the PSI infinite


@dataclass(frozen=True)
class FeatureStats:
    """Training statistics of the features, in feature order."""

    names: list[str]
    low: np.ndarray
    high: np.ndarray
    edges: list[np.ndarray]
    expected: list[np.ndarray]

    @classmethod
    def from_dict(cls, stats: dict) -> FeatureStats:
        features = stats["features"]
        return cls(names=[f["name"] for f in features],
                   low=np.array([f["min"] for f in features]),
                   high=np.array([f["max"] for f in features]),
                   edges=[np.asarray(f["bin_edges"], dtype=np.float64) for f in features],
                   expected=[np.asarray(f["expected_fractions"]) for f in features])


def population_stability(expected: np.ndarray, observed_counts: np.ndarray) -> float:
    """PSI of observed bin counts against the expected fractions."""
    observed = np.maximum(observed_counts / max(observed_counts.sum(), 1), _EPSILON)
    expected = np.maximum(expected, _EPSILON)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


class DriftWindow:
    """Bin counts of the last WINDOW_ROWS rows, per feature."""

    def __init__(self, stats: FeatureStats, *, size: int = WINDOW_ROWS) -> None:
        self.stats = stats
        self.size = size
        self.bins = np.zeros((size, len(stats.names)), dtype=np.int64)  # ring of binned rows
        self.counts = [np.zeros(len(e) + 1, dtype=np.int64) for e in stats.edges]
        self.seen = 0

    def add(self, X: np.ndarray) -> None:
        """Bin new rows into the window, evicting the oldest."""
        X = X[-self.size:]
        slots = (self.seen + np.arange(len(X))) % self.size
        for j, edges in enumerate(self.stats.edges):
            self.bins[slots, j] = np.searchsorted(edges, X[:, j], side="right")
        self.seen += len(X)
        # Recounting the whole window is cheaper than adding and evicting bin by bin. The ring
        # fills from slot 0, so its first `seen` slots hold rows.
        live = self.bins[:self.seen]
        self.counts = [np.bincount(live[:, j], minlength=len(edges) + 1)
                       for j, edges in enumerate(self.stats.edges)]

    def psi(self) -> list[float]:
        return [population_stability(e, c) for e, c in zip(self.stats.expected, self.counts)]


def observe_all(histogram, amounts: list[float]) -> None:
    """histogram.observe(amount) for each amount: one write per bucket hit rather than two per amount."""
    # prometheus_client has no call for this: its Histogram's own fields (0.26), as observe() uses
    # them (a unit test holds the result to observe()'s), and observe() itself should they go.
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        for amount in amounts:
            histogram.observe(amount)
        return
    # observe() counts an amount in the first bucket whose upper bound is >= it.
    counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
    for bucket, count in zip(buckets, counts.tolist()):
        if count:
            bucket.inc(count)
    total.inc(sum(amounts))


class _Collectors:
    """prometheus_client's metric classes, each name registered once per process (shared by a second ServiceMetrics)."""

    _made: dict[str, object] = {}

    def __getattr__(self, kind: str):
        import prometheus_client

        def make(name: str, *args, **kwargs):
            if name not in self._made:
                self._made[name] = getattr(prometheus_client, kind)(name, *args, **kwargs)
            return self._made[name]

        return make


class ServiceMetrics:
    """The service's own Prometheus series; create it inside the worker, after BentoML set it up."""

    def __init__(self, *, class_names: list[str], stats: FeatureStats | None) -> None:
        # Imported here: BentoML points prometheus_client at its multiprocess folder at start-up.
        prom = _Collectors()
        predictions = prom.Counter("classifier_predictions", "Predicted rows by class", ["label"])
        self.by_class = [predictions.labels(name) for name in class_names]
        self.rows = prom.Histogram("classifier_request_rows", "Rows per /predict request",
                                   buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000))
        self.rejected = prom.Counter("classifier_rejected_requests",
                                     "Requests to our routes refused, by reason", ["reason"])
        # Each reason exported at 0 from start (see REASONS), its child kept: label lookups are slow.
        self._refusals = {reason: self.rejected.labels(reason) for reason in REASONS}
        # Our routes answer before BentoML's traffic middleware, so they are timed here.
        self.latency = prom.Histogram("classifier_http_request_duration_seconds",
                                      "Time to answer, by endpoint and status", ["endpoint", "status"],
                                      buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                               0.1, 0.25, 0.5, 1.0, 2.5))
        self._latency_children: dict[tuple[str, int], object] = {}
        self.stats = stats
        self.window = DriftWindow(stats) if stats else None
        # Answered requests wait here and are counted together at most FLUSH_SECONDS later (or
        # when this worker answers a scrape, see flush): counting, binning and PSI on every
        # request cost as much as the prediction itself, and each update of a series in
        # prometheus_client's multiprocess mode is a locked write to its file plus a getpid().
        self._answered: list[tuple[np.ndarray, np.ndarray]] = []
        self._answered_rows: list[tuple[list[float], int]] = []  # from observe_row
        self._timed: list[tuple[str, int, float]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop of the pending flush
        if stats:
            out = prom.Counter("classifier_feature_out_of_range",
                               "Feature values outside the training range", ["feature"])
            self.out_of_range = [out.labels(name) for name in stats.names]
            self._psi_gauge = prom.Gauge(
                "classifier_feature_psi",
                f"Population stability index of the last {WINDOW_ROWS} rows against the training "
                f"deciles, once {MIN_PSI_ROWS} rows were seen: about 0.1 moderate shift, above 0.25 large",
                ["feature"], multiprocess_mode="mostrecent")
            self.psi: list | None = None  # the gauges' children, made when they first have a value

    def expect(self, endpoints) -> None:
        """Export the answered (200) series of these endpoints at zero, before their first request."""
        # Prometheus takes a series' first value as its start: requests counted before the first
        # scrape that saw the series would never show in rate() (nor in ClassifierNoTraffic).
        for endpoint in endpoints:
            if (endpoint, 200) not in self._latency_children:
                self._latency_children[(endpoint, 200)] = self.latency.labels(endpoint, "200")

    def observe(self, X: np.ndarray, predicted: np.ndarray) -> None:
        """Count one answered request: its rows and the predicted class indices (kept, not copied)."""
        self._answered.append((X, predicted))
        self._flush_soon()

    def observe_row(self, row: list[float], predicted: int) -> None:
        """observe() of a one-row request given as Python values: its numbers and class index."""
        self._answered_rows.append((row, predicted))
        self._flush_soon()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Time one answered request."""
        self._timed.append((endpoint, status, seconds))
        self._flush_soon()

    def _flush_soon(self) -> None:
        # Checked before asking for the running loop: on Python 3.11 that costs a getpid().
        if self._flush_loop is None or self._flush_loop.is_closed():  # none pending that will run
            self._flush_loop = asyncio.get_running_loop()
            self._flush_loop.call_later(FLUSH_SECONDS, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_loop = None
        self.flush()

    def flush(self) -> None:
        """Count what was answered since the last flush; its rows reach the drift window and PSI."""
        timed, self._timed = self._timed, []
        by_route: dict[tuple[str, int], list[float]] = {}
        for endpoint, status, seconds in timed:
            by_route.setdefault((endpoint, status), []).append(seconds)
        for (endpoint, status), durations in by_route.items():
            child = self._latency_children.get((endpoint, status))
            if child is None:  # label lookups are slow: keep the children
                child = self._latency_children[(endpoint, status)] = \
                    self.latency.labels(endpoint, str(status))
            observe_all(child, durations)
        answered, self._answered = self._answered, []
        row_counts = [len(X) for X, _ in answered]
        if self._answered_rows:  # one array for all the one-row requests
            rows, classes = zip(*self._answered_rows)
            self._answered_rows = []
            answered.append((np.array(rows, dtype=np.float64), np.array(classes, dtype=np.int64)))
            row_counts += [1] * len(rows)
        if not answered:
            return
        observe_all(self.rows, row_counts)
        predicted = np.concatenate([classes for _, classes in answered])
        for index, count in enumerate(np.bincount(predicted, minlength=len(self.by_class)).tolist()):
            if count:
                self.by_class[index].inc(count)
        if self.window is None:
            return
        X = np.concatenate([rows for rows, _ in answered])
        outside = ((X < self.stats.low) | (X > self.stats.high)).sum(axis=0).tolist()  # NaN: inside
        for j, count in enumerate(outside):
            if count:
                self.out_of_range[j].inc(count)
        self.window.add(X)
        if self.window.seen < MIN_PSI_ROWS:
            return
        if self.psi is None:
            self.psi = [self._psi_gauge.labels(name) for name in self.stats.names]
        for gauge, value in zip(self.psi, self.window.psi()):
            gauge.set(value)

    def reject(self, reason: str) -> None:
        (self._refusals.get(reason) or self.rejected.labels(reason)).inc()


class ShadowScore(NamedTuple):
    """One request as production answered it and as the challenger scored it, and the challenger's time."""

    probabilities: np.ndarray  # production's (rows, classes)
    predicted: np.ndarray  # production's class index per row
    challenger_probabilities: np.ndarray
    challenger_predicted: np.ndarray
    seconds: list[float]  # the challenger's time for each request timed (some requests are scored together)


class ShadowMetrics:
    """The shadow_* series of one challenger (label `challenger`: its Bento tag); written by the shadow's thread."""

    def __init__(self, *, challenger: str, class_names: list[str]) -> None:
        prom = _Collectors()
        self.rows = prom.Counter("shadow_rows", "Rows the challenger scored", ["challenger"]).labels(challenger)
        self.agreements = prom.Counter("shadow_label_agreements",
                                       "Rows where the challenger's label is production's", ["challenger"]
                                       ).labels(challenger)
        # _sum / _count is the mean absolute probability difference per row (mean over the classes).
        self.difference = prom.Histogram(
            "shadow_probability_difference",
            "Per row: the mean over the classes of |challenger - production| probability", ["challenger"],
            buckets=(0.0001, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)).labels(challenger)
        self.latency = prom.Histogram("shadow_latency_seconds",
                                      "The challenger's time to score one request (one-row requests: a sample)",
                                      ["challenger"], buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                               0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
                                      ).labels(challenger)
        predictions = prom.Counter("shadow_predictions", "Rows by the challenger's predicted class",
                                   ["challenger", "label"])
        self.by_class = [predictions.labels(challenger, name) for name in class_names]
        self.dropped = prom.Counter("shadow_dropped_requests",
                                    "Answered requests the challenger never saw: its queue was full",
                                    ["challenger"]).labels(challenger)
        self.errors = prom.Counter("shadow_errors", "Requests the challenger failed to score (raised)",
                                   ["challenger"]).labels(challenger)

    def record(self, scored: list[ShadowScore]) -> None:
        """Count requests the challenger scored, compared with production's answers."""
        production = np.concatenate([score.probabilities for score in scored])
        challenger = np.concatenate([score.challenger_probabilities for score in scored])
        chosen = np.concatenate([score.challenger_predicted for score in scored])
        agreed = int((np.concatenate([score.predicted for score in scored]) == chosen).sum())
        self.rows.inc(len(chosen))
        if agreed:
            self.agreements.inc(agreed)
        observe_all(self.difference, np.abs(challenger - production).mean(axis=1).tolist())
        observe_all(self.latency, [seconds for score in scored for seconds in score.seconds])
        for index, count in enumerate(np.bincount(chosen, minlength=len(self.by_class)).tolist()):
            if count:
                self.by_class[index].inc(count)
