"""LogisticRegression as numpy arithmetic: sklearn's answers without sklearn's per-call checks.

sklearn 1.9 validates its input on every call, which costs ~0.5 ms a request; the same
arithmetic in numpy costs ~10 us. The operations below are sklearn's, in sklearn's order, so
the probabilities agree with `Pipeline.predict_proba` to rounding (tests check 1e-12).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.forms.encoder import Encoder, encoder_and_classifier
from serving.schema import Table, TableSchema

PARAMS_FILE = "linear_params.npz"


@dataclass(frozen=True)
class LinearPredictor:
    """The preprocessing encoder followed by a (binary or multinomial) LogisticRegression."""

    encoder: Encoder
    coef: np.ndarray  # (n_outputs, n_encoded); one row for a binary model
    intercept: np.ndarray  # (n_outputs,)
    form = "linear"

    @property
    def n_classes(self) -> int:
        return max(2, self.coef.shape[0])

    def predict_proba(self, table: Table) -> np.ndarray:
        """Class probabilities, one row per table row."""
        scores = self.encoder.encode(table) @ self.coef.T
        scores += self.intercept
        if self.coef.shape[0] == 1:  # binary: sklearn's expit on the one score
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1 - positive, positive], axis=1)
        # sklearn's softmax, step for step. The row max and sum are taken column by column:
        # numpy's reductions along short rows are slow, and left-to-right is how numpy adds
        # rows of fewer than 8 values, so the result is the same to the bit.
        top = scores[:, 0].copy()
        for column in scores.T[1:]:
            np.maximum(top, column, out=top)
        scores -= top[:, None]
        np.exp(scores, out=scores)
        total = scores[:, 0].copy()
        for column in scores.T[1:]:
            total += column
        scores /= total[:, None]
        return scores

    def save(self, directory: Path) -> None:
        """Pickle-free .npz files."""
        self.encoder.save(directory)
        np.savez(directory / PARAMS_FILE, coef=self.coef, intercept=self.intercept)


def load(directory: Path, schema: TableSchema) -> LinearPredictor:
    """Read what save wrote; never unpickles."""
    with np.load(directory / PARAMS_FILE, allow_pickle=False) as data:
        coef, intercept = (np.ascontiguousarray(data[k], dtype=np.float64) for k in ("coef", "intercept"))
    return LinearPredictor(encoder=Encoder.load(directory), coef=coef, intercept=intercept)


def from_pipeline(pipeline, schema: TableSchema) -> LinearPredictor:
    """Take the fitted numbers out of a preprocessing + LogisticRegression pipeline."""
    from sklearn.linear_model import LogisticRegression

    from serving.forms import Unsupported

    encoder, classifier = encoder_and_classifier(pipeline, schema)
    if not isinstance(classifier, LogisticRegression):
        raise Unsupported("the classifier is not a LogisticRegression")
    if not np.array_equal(classifier.classes_, np.arange(len(classifier.classes_))):
        raise Unsupported("expected class labels 0..n-1 (indices into the class names)")
    return LinearPredictor(encoder=encoder, coef=np.asarray(classifier.coef_, dtype=np.float64),
                           intercept=np.asarray(classifier.intercept_, dtype=np.float64))
