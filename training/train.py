"""Fit one LogisticRegression pipeline and describe how well it does."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training.data import Split

PENALTIES = ("l1", "l2")
# saga is the one solver that does both l1 and l2 for multinomial problems.
SOLVER = "saga"
MAX_ITER = 5000
PSI_BINS = 10


@dataclass(frozen=True)
class HyperParams:
    """One point of the grid."""

    C: float
    penalty: str


def build_pipeline(params: HyperParams, *, random_state: int) -> Pipeline:
    """A scaler + LogisticRegression pipeline, so the model alone predicts from raw features."""
    if params.penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, not {params.penalty!r}")
    # sklearn 1.8 deprecated penalty=...; l1_ratio 1/0 asks for pure l1/l2.
    classifier = LogisticRegression(
        C=params.C,
        l1_ratio=1.0 if params.penalty == "l1" else 0.0,
        solver=SOLVER,
        max_iter=MAX_ITER,
        random_state=random_state,
    )
    return Pipeline([("scaler", StandardScaler()), ("classifier", classifier)])


def fit_pipeline(
    params: HyperParams, split: Split, *, feature_names: list[str], random_state: int
) -> Pipeline:
    """Fit on the training rows only: the scaler never sees a test row."""
    # Named columns: MLflow's pyfunc hands the model a DataFrame with these names.
    X_train = pd.DataFrame(split.X_train, columns=feature_names)
    return build_pipeline(params, random_state=random_state).fit(X_train, split.y_train)


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy plus macro-averaged precision, recall and F1."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def report_classification(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]
) -> tuple[str, dict]:
    """sklearn's classification report as text and as a dict."""
    labels = list(range(len(class_names)))
    kwargs = dict(labels=labels, target_names=class_names, zero_division=0)
    text = classification_report(y_true, y_pred, **kwargs)
    as_dict = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    return text, as_dict


def plot_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], *, title: str
) -> Figure:
    """A labelled confusion-matrix heat map."""
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(class_names))))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    return fig


def plot_metric_grid(results: list[tuple[HyperParams, dict[str, float]]], *, metric: str) -> Figure:
    """The metric against C, one line per penalty, for comparing a sweep at a glance."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for penalty in sorted({p.penalty for p, _ in results}):
        points = sorted((p.C, m[metric]) for p, m in results if p.penalty == penalty)
        ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=penalty)
    ax.set_xscale("log")
    ax.set_xlabel("C (inverse regularisation)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} across the grid")
    ax.legend(title="penalty")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def describe_features(X_train: np.ndarray, feature_names: list[str]) -> dict:
    """Training-set statistics per feature, kept with the model to spot drift at serving time."""
    quantiles = np.linspace(0, 1, PSI_BINS + 1)[1:-1]
    features = []
    for column, name in zip(X_train.T, feature_names, strict=True):
        edges = np.unique(np.quantile(column, quantiles))
        counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
        features.append(
            {
                "name": name,
                "min": float(column.min()),
                "max": float(column.max()),
                "mean": float(column.mean()),
                "std": float(column.std()),
                "bin_edges": edges.tolist(),
                "expected_fractions": (counts / counts.sum()).tolist(),
            }
        )
    return {"n_rows": int(X_train.shape[0]), "features": features}
