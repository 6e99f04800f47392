"""The scoring core: the one place that predicts, picks each row's class and counts it; and the request limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from serving.errors import RequestError
from serving.model import LoadedModel
from serving.monitoring import ServiceMetrics
from serving.schema import Row, Table

# Far beyond any real feature, and far enough inside float64's range that scaling and the
# dot product cannot overflow into inf - inf = NaN probabilities.
MAX_ABS_FEATURE = 1e100


@dataclass(frozen=True)
class Limits:
    """What one request may be: rows, body size, and seconds for its body to arrive."""

    max_rows: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    request_timeout: float = 10.0


def check_row_count(count: int, *, max_rows: int, status: int = 422) -> None:
    """Refuse more than max_rows rows, with the protocol's status (V2's servers answer every bad request 400)."""
    if count > max_rows:
        raise RequestError(status, f"{count} rows is more than the limit of {max_rows} per request", "too_many_rows")


def first_out_of_range(X: np.ndarray, *, limit: float = MAX_ABS_FEATURE) -> int | None:
    """The first row of X holding a value beyond limit (or infinite), if any; NaN is missing."""
    within = ~(np.abs(X) > limit)  # False for inf, True for NaN
    if within.all():
        return None
    return int(np.argmin(within.reshape(len(X), -1).all(axis=1)))


def check_range(X: np.ndarray) -> np.ndarray:
    """X itself, unless a value is beyond MAX_ABS_FEATURE (or infinite); NaN means missing."""
    bad = first_out_of_range(X)
    if bad is not None:
        raise out_of_range(bad)
    return X


def within_range(values: list[float]) -> bool:
    """True if no number of one row (finite Python floats) is beyond MAX_ABS_FEATURE: numpy costs more for one row."""
    return max(map(abs, values), default=0.0) <= MAX_ABS_FEATURE


def out_of_range(row: int) -> RequestError:
    """The refusal of a row holding a value beyond MAX_ABS_FEATURE."""
    return RequestError(422, f"row {row} holds a value outside the accepted range "
                             f"-{MAX_ABS_FEATURE:g} to {MAX_ABS_FEATURE:g}", "out_of_range")


def argmax_of(values: list[float]) -> int:
    """np.argmax of a list: the index of the first largest value, or of the first NaN if any."""
    total = sum(values)
    if total != total:  # a NaN (or inf and -inf): numpy's argmax picks the first NaN
        for index, value in enumerate(values):
            if value != value:
                return index
    return values.index(max(values))


class Follower(Protocol):
    """What else sees every scored request: the shadow (serving/shadow.py), which must not hold it up."""

    active: bool

    def offer(self, table: Table, probabilities: np.ndarray, predicted: np.ndarray) -> None: ...

    def offer_row(self, row: Row, probabilities: list[float], predicted: int) -> None: ...

    def describe(self) -> dict: ...


class Scorer:
    """A loaded model, scoring decoded rows and counting them in the service's metrics (and its shadow)."""

    def __init__(self, model: LoadedModel, *, limits: Limits, metrics: ServiceMetrics | None = None,
                 shadow: Follower | None = None) -> None:
        self.model = model
        self.limits = limits
        self.metrics = metrics
        self.shadow = shadow  # named in /metadata, even when it does not score
        # Every protocol scores here, so every accepted request reaches the challenger from here.
        self._follower = shadow if shadow is not None and shadow.active else None

    def score(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (rows, classes) and the predicted class index of each row."""
        probabilities = self.model.predictor.predict_proba(table)
        predicted = probabilities.argmax(axis=1)
        if self.metrics is not None:
            self.metrics.observe(table.numeric, predicted)
        if self._follower is not None:
            self._follower.offer(table, probabilities, predicted)
        return probabilities, predicted

    def score_row(self, row: Row) -> tuple[list[float], int]:
        """score() of one row of Python values, the usual request, without a Table around it."""
        probabilities = self.model.predictor.predict_row(*row)
        predicted = argmax_of(probabilities)
        if self.metrics is not None:
            self.metrics.observe_row(row.numbers, predicted)
        if self._follower is not None:
            self._follower.offer_row(row, probabilities, predicted)
        return probabilities, predicted
