"""Load, validate and split a bundled scikit-learn dataset or the user's own CSV/Parquet table."""

from __future__ import annotations

import hashlib
import io
import math
import os
import shlex
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.model_selection import train_test_split

from serving.errors import one_line
from training.cli import CommandError
from training.config import DATASETS

_LOADERS = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
}
_READERS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}
# Error messages list at most this many column names so they stay one readable line.
_MAX_LISTED_COLUMNS = 10


class DataValidationError(CommandError, ValueError):
    """The data is not fit to train on."""


@dataclass(frozen=True)
class Dataset:
    """Feature table, integer targets and the names that give them meaning."""

    name: str
    X: pd.DataFrame
    y: np.ndarray
    class_names: list[str]
    numeric_features: list[str]
    categorical_features: list[str]
    sha256: str
    source: str

    @property
    def feature_names(self) -> list[str]:
        """The feature columns in table order."""
        return list(self.X.columns)


@dataclass(frozen=True)
class Split:
    """A stratified train/test split of one dataset."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray


def load_dataset(name: str) -> Dataset:
    """Load a bundled scikit-learn dataset by name."""
    if name not in _LOADERS:
        raise DataValidationError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    bunch = _LOADERS[name]()
    values = np.ascontiguousarray(bunch.data, dtype=np.float64)
    y = np.ascontiguousarray(bunch.target, dtype=np.int64)
    feature_names = [str(f) for f in bunch.feature_names]
    dataset = Dataset(
        name=name,
        X=pd.DataFrame(values, columns=feature_names),
        y=y,
        class_names=[str(c) for c in bunch.target_names],
        numeric_features=feature_names,
        categorical_features=[],
        sha256=hashlib.sha256(values.tobytes() + y.tobytes()).hexdigest(),
        source=f"sklearn:{name}",
    )
    validate_dataset(dataset)
    return dataset


def load_table(
    path: str | Path,
    *,
    target: str,
    drop: Sequence[str] = (),
    name: str | None = None,
    test_size: float = 0.2,
) -> Dataset:
    """Load a CSV or Parquet table, check it can be trained on, and split off the target."""
    source = os.fspath(path)
    path = Path(path)
    # A lone string is one column name, not a sequence of one-letter names.
    drop = (drop,) if isinstance(drop, str) else tuple(drop)
    if not 0.0 < test_size < 1.0:
        raise DataValidationError(f"test_size must be between 0 and 1, got {test_size}")
    raw = _read_bytes(path)
    kind = _READERS[path.suffix.lower()]
    header = _read_header(raw, kind=kind, path=path)
    duplicates = sorted(n for n, count in Counter(h for h in header if h != "").items() if count > 1)
    if duplicates:
        raise DataValidationError(f"{path.name}: duplicate column names: {_names(duplicates)}")
    frame = _read_frame(raw, kind=kind, path=path)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if frame.shape[1] == 0:
        raise DataValidationError(f"{path.name} is empty: no columns")
    if frame.shape[0] == 0:
        raise DataValidationError(f"{path.name} is empty: no data rows")

    unknown = [d for d in drop if d not in columns]
    if unknown:
        raise DataValidationError(
            f"cannot drop {_names(unknown)}: no such column in {path.name} "
            f"(columns: {_names(columns)})")
    if target not in columns:
        raise DataValidationError(
            f"target column {target!r} not found in {path.name} (columns: {_names(columns)})")
    if target in drop:
        raise DataValidationError(f"cannot drop {target!r}: it is the target column")
    features = [c for c in columns if c != target and c not in drop]
    if not features:
        raise DataValidationError(
            f"{path.name}: no feature columns left after removing target {target!r}"
            + (f" and dropped {_names(drop)}" if drop else ""))

    # Rows without a label cannot be learned from; everything after sees only labelled rows.
    frame = frame.loc[frame[target].notna()].reset_index(drop=True)
    if len(frame) == 0:
        raise DataValidationError(f"{path.name}: every row has a missing target {target!r}")
    y, class_names = _encode_target(frame[target])
    _check_classes(y, class_names, target=target, test_size=test_size)

    numeric = [c for c in features if _is_numeric(frame[c])]
    X = pd.DataFrame({
        # dtype given explicitly: pandas would otherwise infer its own string dtype for text.
        c: pd.Series(_as_float(frame[c]) if c in numeric else _as_text(frame[c]),
                     dtype=np.float64 if c in numeric else object)
        for c in features
    })
    for column in features:
        if X[column].isna().all():
            raise DataValidationError(
                f"feature column {column!r} is empty (every value missing); "
                f"remove it with --drop {shlex.quote(column)}")
    for column in numeric:
        # StandardScaler and LogisticRegression reject infinities; say which column has them.
        if np.isinf(X[column].to_numpy()).any():
            raise DataValidationError(f"feature column {column!r} contains infinite values")

    dataset = Dataset(
        name=name if name is not None else path.stem,
        X=X,
        y=y,
        class_names=class_names,
        numeric_features=numeric,
        categorical_features=[c for c in features if c not in numeric],
        sha256=hashlib.sha256(raw).hexdigest(),
        source=source,
    )
    validate_dataset(dataset)
    return dataset


def validate_dataset(dataset: Dataset) -> None:
    """Raise DataValidationError unless a Dataset's parts are consistent with each other."""
    X, y = dataset.X, dataset.y
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataValidationError(f"{dataset.name}: expected a non-empty feature table")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataValidationError(f"{dataset.name}: {X.shape[0]} rows but {y.shape[0]} targets")
    if y.dtype != np.int64 or y.min() < 0 or y.max() >= len(dataset.class_names):
        raise DataValidationError(f"{dataset.name}: targets are not indices into the class names")
    typed = dataset.numeric_features + dataset.categorical_features
    if sorted(typed) != sorted(X.columns):
        raise DataValidationError(
            f"{dataset.name}: numeric and categorical features do not match the columns")
    for column in dataset.numeric_features:
        if X[column].dtype != np.float64:
            raise DataValidationError(f"{dataset.name}: numeric feature {column!r} is not float64")
    for column in dataset.categorical_features:
        if X[column].dtype != object:
            raise DataValidationError(
                f"{dataset.name}: categorical feature {column!r} is not of dtype object")


def split_dataset(dataset: Dataset, *, test_size: float, random_state: int) -> Split:
    """Stratified train/test split with a fixed random state; both parts get a fresh 0..n-1 index."""
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X, dataset.y, test_size=test_size, random_state=random_state, stratify=dataset.y
    )
    # A fresh index so nobody aligns these rows with y (a plain array) by old row labels.
    return Split(X_train=X_train.reset_index(drop=True), X_test=X_test.reset_index(drop=True),
                 y_train=y_train, y_test=y_test)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, read once: they are both hashed and parsed."""
    if not path.exists():
        raise DataValidationError(f"data file not found: {path}")
    if not path.is_file():
        raise DataValidationError(f"data path is not a file: {path}")
    if path.suffix.lower() not in _READERS:
        raise DataValidationError(
            f"unsupported file type {path.suffix or '(none)'!r} for {path.name}; "
            f"use one of {', '.join(_READERS)}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataValidationError(f"cannot read {path}: {one_line(exc)}") from exc


def _read_header(raw: bytes, *, kind: str, path: Path) -> list[str]:
    """The column names exactly as the file has them (pandas would rename duplicates)."""
    with _reader_errors(path, kind=kind):
        if kind == "CSV":
            # keep_default_na=False: a column named "NA" is a name, not a missing value.
            head = pd.read_csv(io.BytesIO(raw), header=None, nrows=1, dtype=str, keep_default_na=False)
            return [str(v) for v in head.iloc[0]] if len(head) else []
        import pyarrow.parquet as pq

        return [str(n) for n in pq.read_schema(io.BytesIO(raw)).names]


def _read_frame(raw: bytes, *, kind: str, path: Path) -> pd.DataFrame:
    """Parse the whole table, turning any reader failure into a one-line DataValidationError."""
    with _reader_errors(path, kind=kind):
        if kind == "CSV":
            # low_memory=False: type each column from all its values, not chunk by chunk.
            frame = pd.read_csv(io.BytesIO(raw), low_memory=False)
            if not frame.index.equals(pd.RangeIndex(len(frame))):
                # pandas silently turns leading extra fields into an index; that is a bad file.
                raise DataValidationError(
                    f"cannot read {path.name} as CSV: rows have more fields than the header")
            return frame
        return pd.read_parquet(io.BytesIO(raw)).reset_index(drop=True)


@contextmanager
def _reader_errors(path: Path, *, kind: str) -> Iterator[None]:
    """Turn any failure of a table reader into a one-line DataValidationError."""
    try:
        yield
    except DataValidationError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"{path.name} is empty: no columns") from exc
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"cannot read {path.name} as {kind}: not UTF-8 text "
            f"(found byte {exc.object[exc.start]:#04x}); save it as UTF-8") from exc
    except Exception as exc:  # noqa: BLE001 - readers raise many types (parser, unicode, arrow, OS)
        raise DataValidationError(f"cannot read {path.name} as {kind}: {one_line(exc)}") from exc


def _is_numeric(column: pd.Series) -> bool:
    """Numeric as pandas read it; booleans (and complex numbers) are treated as categories."""
    dtype = column.dtype
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype))


def _as_float(column: pd.Series) -> np.ndarray:
    """float64 values with NaN for missing (nullable Int64 from Parquet included)."""
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _as_text(column: pd.Series) -> np.ndarray:
    """Object array of str values, np.nan where the value is missing."""
    missing = column.isna().to_numpy()
    values = np.full(len(column), np.nan, dtype=object)
    values[~missing] = [str(v) for v in column[~missing]]
    return values


def _encode_target(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names sorted by value (numerically for a numeric target)."""
    if _is_numeric(column):
        values = _as_float(column)
        classes, y = np.unique(values, return_inverse=True)
        # Integer labels come back as floats when the column had gaps; name them 0, 1, not 0.0, 1.0.
        integral = bool(np.all(np.mod(classes, 1) == 0))
        names = [str(int(c)) if integral else str(c) for c in classes]
    else:
        names_array, y = np.unique(_as_text(column).astype(str), return_inverse=True)
        names = [str(n) for n in names_array]
    return y.astype(np.int64), names


def _check_classes(y: np.ndarray, class_names: list[str], *, target: str, test_size: float) -> None:
    """Refuse targets a stratified split with this test_size cannot divide."""
    n_rows, n_classes = len(y), len(class_names)
    if n_classes < 2:
        raise DataValidationError(
            f"target {target!r} has only one class ({class_names[0]!r}); need at least two")
    counts = np.bincount(y, minlength=n_classes)
    rarest = int(np.argmin(counts))
    if counts[rarest] < 2:
        raise DataValidationError(
            f"class {class_names[rarest]!r} of target {target!r} has only {counts[rarest]} row; "
            "a stratified split needs at least 2 rows per class")
    # The same sizes train_test_split computes for a float test_size.
    n_test = math.ceil(test_size * n_rows)
    n_train = n_rows - n_test
    if n_test < n_classes or n_train < n_classes:
        part, size = ("test", n_test) if n_test < n_classes else ("train", n_train)
        raise DataValidationError(
            f"too few rows: the {part} part ({size} of {n_rows} rows at test_size={test_size}) "
            f"cannot hold one row of each of the {n_classes} classes of {target!r}")


def _names(names: Sequence[str]) -> str:
    """Quoted, comma-separated names, shortened when there are many."""
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED_COLUMNS])
    extra = len(names) - _MAX_LISTED_COLUMNS
    return f"{shown}, ... ({extra} more)" if extra > 0 else shown
