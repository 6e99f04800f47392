"""Fit one pipeline of a sweep and describe how well it does."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.pipeline import Pipeline

from training.data import Dataset, Split
from training.models import GridPoint, build_pipeline

PSI_BINS = 10


def fit_pipeline(point: GridPoint, split: Split, *, dataset: Dataset, random_state: int) -> Pipeline:
    """Fit preprocessing and classifier on the training rows only: no test row is ever seen."""
    pipeline = build_pipeline(point, numeric=dataset.numeric_features,
                              categorical=dataset.categorical_features, random_state=random_state)
    # Named columns: MLflow's pyfunc hands the model a DataFrame with these names.
    return pipeline.fit(split.X_train, split.y_train)


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


def plot_metric_grid(results: list[tuple[GridPoint, dict[str, float]]], *, metric: str) -> Figure:
    """One bar per run, coloured by model family, for comparing a sweep at a glance."""
    families = list(dict.fromkeys(point.model for point, _ in results))
    colours = {family: f"C{i}" for i, family in enumerate(families)}
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(results) + 1.5))
    labels = [" ".join(point.describe().split(" ")[1:]) or point.model for point, _ in results]
    ax.barh(range(len(results)), [m[metric] for _, m in results],
            color=[colours[point.model] for point, _ in results])
    ax.set_yticks(range(len(results)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{metric} across the sweep")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[f]) for f in families],
              labels=families, fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def describe_features(X_train: pd.DataFrame, numeric_features: list[str]) -> dict:
    """Training-set statistics per numeric feature, kept with the model to spot drift at serving time."""
    quantiles = np.linspace(0, 1, PSI_BINS + 1)[1:-1]
    features = []
    for name in numeric_features:
        column = X_train[name].to_numpy(dtype=np.float64)
        column = column[~np.isnan(column)]  # missing values are imputed, not part of the range
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
    return {"n_rows": int(len(X_train)), "features": features}
