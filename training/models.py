"""The model families a sweep can train, their default grids, and the one preprocessing every family gets."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

PENALTIES = ("l1", "l2")
# saga is the one solver that does both l1 and l2 for multinomial problems.
SOLVER = "saga"
MAX_ITER = 5000
# What a missing text value becomes before one-hot encoding: a category of its own.
MISSING_CATEGORY = "missing_value"


def _logistic_regression(*, C: float, penalty: str, random_state: int) -> LogisticRegression:
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}, not {penalty!r}")
    # sklearn 1.8 deprecated penalty=...; l1_ratio 1/0 asks for pure l1/l2.
    return LogisticRegression(C=C, l1_ratio=1.0 if penalty == "l1" else 0.0, solver=SOLVER,
                              max_iter=MAX_ITER, random_state=random_state)


def _random_forest(*, random_state: int, **params: Any) -> RandomForestClassifier:
    return RandomForestClassifier(random_state=random_state, **params)


def _hist_gradient_boosting(*, random_state: int, **params: Any) -> HistGradientBoostingClassifier:
    # early_stopping off: with "auto" it switches on past 10,000 rows and holds out a
    # validation set, which would make large and small tables train differently.
    return HistGradientBoostingClassifier(random_state=random_state, early_stopping=False, **params)


@dataclass(frozen=True)
class Family:
    """A kind of classifier: how to build it and the grid a sweep tries by default."""

    name: str
    build: Callable[..., Any]
    grid: dict[str, tuple]
    label: str  # for descriptions: "LogisticRegression", ...

    def accepts(self, param: str) -> bool:
        """True if `--param param=...` means something to this family."""
        return param in self.grid or param in self.build(random_state=0, **self.first_point()).get_params()

    def first_point(self) -> dict[str, Any]:
        return {key: values[0] for key, values in self.grid.items()}


FAMILIES: dict[str, Family] = {
    family.name: family for family in (
        Family("logistic_regression", _logistic_regression,
               {"C": (0.1, 1.0, 10.0), "penalty": PENALTIES}, "LogisticRegression"),
        Family("random_forest", _random_forest,
               {"n_estimators": (100, 200), "max_depth": (None, 8)}, "RandomForestClassifier"),
        Family("hist_gradient_boosting", _hist_gradient_boosting,
               {"learning_rate": (0.05, 0.1), "max_leaf_nodes": (15, 31)},
               "HistGradientBoostingClassifier"),
    )
}
DEFAULT_FAMILY = "logistic_regression"


@dataclass(frozen=True)
class GridPoint:
    """One model of a sweep: the family and its hyperparameters."""

    model: str
    params: dict[str, Any] = field(hash=False)

    def describe(self) -> str:
        """Short text for run names and logs, e.g. `logistic_regression C=1 penalty=l2`."""
        return " ".join([self.model, *(f"{k}={format_value(v)}" for k, v in self.params.items())])


def format_value(value: Any) -> str:
    """A hyperparameter as text: 1.0 -> 1, None -> None."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_value(text: str) -> Any:
    """A hyperparameter from the command line: int, float, None, true/false, else the text."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_param(text: str) -> tuple[str, tuple]:
    """`name=v1,v2` -> ("name", (v1, v2)); raises ValueError with a readable message."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise ValueError(f"--param takes name=value[,value...], not {text!r}")
    return name.strip(), tuple(parse_value(v) for v in values.split(","))


def make_grid(models: list[str], overrides: dict[str, tuple] | None = None) -> list[GridPoint]:
    """Every combination of each family's grid, with --param overrides, in a stable order."""
    overrides = overrides or {}
    unknown_models = [m for m in models if m not in FAMILIES]
    if unknown_models:
        raise ValueError(f"unknown model {unknown_models[0]!r}; choose from {', '.join(FAMILIES)}")
    for param in overrides:
        if not any(FAMILIES[m].accepts(param) for m in models):
            raise ValueError(f"--param {param}: none of {', '.join(models)} has that parameter")
    points = []
    for model in dict.fromkeys(models):  # each family once, in the order given
        family = FAMILIES[model]
        grid = dict(family.grid)
        grid.update({k: v for k, v in overrides.items() if family.accepts(k)})
        for values in itertools.product(*grid.values()):
            points.append(GridPoint(model=model, params=dict(zip(grid, values))))
    return points


def build_preprocessor(*, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Impute and scale numeric columns, impute and one-hot encode text columns."""
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                                  ("scale", StandardScaler())]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), categorical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def build_pipeline(point: GridPoint, *, numeric: list[str], categorical: list[str],
                   random_state: int) -> Pipeline:
    """Preprocessing then the classifier of the grid point, unfitted."""
    classifier = FAMILIES[point.model].build(random_state=random_state, **point.params)
    return Pipeline([("preprocess", build_preprocessor(numeric=numeric, categorical=categorical)),
                     ("classifier", classifier)])
