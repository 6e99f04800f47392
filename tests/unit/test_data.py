"""Unit tests for training.data: bundled datasets, user tables, validation errors and the split."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.model_selection import train_test_split

from training.config import PROJECT_ROOT
from training.data import DataValidationError, Dataset, load_dataset, load_table, split_dataset

pytestmark = pytest.mark.unit

CHURN_CSV = PROJECT_ROOT / "data" / "churn.csv"
CHURN_FEATURES = ["tenure_months", "monthly_charges", "support_calls", "contract", "payment_method"]
# Six rows, two balanced classes: the smallest kind of table every check accepts at test_size 0.2.
GOOD_CSV = "a,b,label\n1,x,p\n2,y,q\n3,x,p\n4,y,q\n5,x,p\n6,y,q\n"


def write(directory: Path, name: str, content: str | bytes) -> Path:
    """Write content to directory/name and return the path."""
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def load_churn(path: Path = CHURN_CSV) -> Dataset:
    """The example table the way the docs tell users to load it."""
    return load_table(path, target="churned", drop=["customer_id"])


def refusal(path: Path, **kwargs) -> str:
    """The message load_table refuses path with; it must be a single line."""
    kwargs.setdefault("target", "label")
    with pytest.raises(DataValidationError) as caught:
        load_table(path, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# Bundled datasets


@pytest.mark.parametrize("name, shape, loader", [
    ("iris", (150, 4), datasets.load_iris),
    ("wine", (178, 13), datasets.load_wine),
    ("breast_cancer", (569, 30), datasets.load_breast_cancer),
])
def test_bundled_dataset_is_a_numeric_frame(name, shape, loader):
    dataset = load_dataset(name)
    bunch = loader()
    assert dataset.X.shape == shape
    assert dataset.feature_names == [str(f) for f in bunch.feature_names]
    assert dataset.numeric_features == dataset.feature_names
    assert dataset.categorical_features == []
    assert (dataset.X.dtypes == np.float64).all()
    assert dataset.y.dtype == np.int64
    np.testing.assert_array_equal(dataset.y, bunch.target)
    np.testing.assert_array_equal(dataset.X.to_numpy(), bunch.data)
    assert dataset.class_names == [str(c) for c in bunch.target_names]
    assert dataset.source == f"sklearn:{name}"
    assert dataset.sha256 == hashlib.sha256(
        np.ascontiguousarray(bunch.data, dtype=np.float64).tobytes()
        + bunch.target.astype(np.int64).tobytes()).hexdigest()


def test_unknown_bundled_dataset_is_refused():
    with pytest.raises(DataValidationError, match="unknown dataset"):
        load_dataset("mnist")


# The example table


def test_churn_loads_with_typed_features():
    dataset = load_churn()
    assert dataset.name == "churn"
    assert dataset.source == str(CHURN_CSV)
    assert dataset.sha256 == hashlib.sha256(CHURN_CSV.read_bytes()).hexdigest()
    assert dataset.feature_names == CHURN_FEATURES
    assert "customer_id" not in dataset.X.columns and "churned" not in dataset.X.columns
    assert dataset.numeric_features == ["tenure_months", "monthly_charges", "support_calls"]
    assert dataset.categorical_features == ["contract", "payment_method"]
    for column in dataset.numeric_features:
        assert dataset.X[column].dtype == np.float64
    for column in dataset.categorical_features:
        assert dataset.X[column].dtype == object
        present = dataset.X[column].dropna()
        assert all(type(v) is str for v in present)
    assert set(dataset.X["contract"].dropna()) == {"month-to-month", "one-year", "two-year"}
    assert dataset.class_names == ["no", "yes"]
    assert dataset.y.dtype == np.int64
    assert len(dataset.y) == len(dataset.X) == 400
    assert 0.2 < dataset.y.mean() < 0.4


def test_churn_missing_values_stay_nan():
    dataset = load_churn()
    raw = pd.read_csv(CHURN_CSV)
    for column in ("tenure_months", "contract"):
        missing = dataset.X[column].isna()
        assert 0 < missing.sum() < 0.1 * len(dataset.X)
        np.testing.assert_array_equal(missing.to_numpy(), raw[column].isna().to_numpy())
    # Missing text is np.nan, not the string "nan" or None.
    assert all(v is np.nan for v in dataset.X["contract"][dataset.X["contract"].isna()])
    assert not (dataset.X["contract"] == "nan").any()


def test_churn_without_drop_keeps_the_id_as_a_category():
    dataset = load_table(CHURN_CSV, target="churned")
    assert dataset.feature_names == ["customer_id", *CHURN_FEATURES]
    assert dataset.categorical_features[0] == "customer_id"


def test_churn_csv_is_exactly_what_the_generator_writes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_churn", PROJECT_ROOT / "data" / "make_churn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "churn.csv"
    assert module.main(["--output", str(output)]) == 0
    assert output.read_bytes() == CHURN_CSV.read_bytes()


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_gives_the_same_dataset_as_csv(tmp_path, suffix):
    path = tmp_path / f"churn{suffix}"
    pd.read_csv(CHURN_CSV).to_parquet(path)
    from_csv, from_parquet = load_churn(), load_churn(path)
    pd.testing.assert_frame_equal(from_parquet.X, from_csv.X)
    np.testing.assert_array_equal(from_parquet.y, from_csv.y)
    assert from_parquet.class_names == from_csv.class_names
    assert from_parquet.numeric_features == from_csv.numeric_features
    assert from_parquet.categorical_features == from_csv.categorical_features
    assert from_parquet.name == from_csv.name == "churn"
    assert from_parquet.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_parquet_nullable_columns_become_float_and_object(tmp_path):
    path = tmp_path / "nullable.parquet"
    pd.DataFrame({
        "count": pd.array([1, None, 3, 4], dtype="Int64"),
        "flag": pd.array([True, None, False, True], dtype="boolean"),
        "label": ["p", "q", "p", "q"],
    }).to_parquet(path)
    dataset = load_table(path, target="label", test_size=0.5)
    assert dataset.numeric_features == ["count"] and dataset.categorical_features == ["flag"]
    assert dataset.X["count"].dtype == np.float64 and np.isnan(dataset.X["count"][1])
    assert dataset.X["flag"].tolist()[:1] == ["True"] and dataset.X["flag"][1] is np.nan


# Typing and target encoding


def test_name_defaults_to_stem_and_can_be_given(tmp_path):
    path = write(tmp_path, "my-table.csv", GOOD_CSV)
    assert load_table(path, target="label").name == "my-table"
    assert load_table(str(path), target="label", name="custom").name == "custom"
    assert load_table(str(path), target="label").source == str(path)


def test_booleans_are_categories_and_numbers_are_float(tmp_path):
    path = write(tmp_path, "t.csv", "n,flag,label\n1,True,p\n2,False,q\n3,True,p\n4,False,q\n")
    dataset = load_table(path, target="label", test_size=0.5)
    assert dataset.numeric_features == ["n"] and dataset.categorical_features == ["flag"]
    assert dataset.X["n"].dtype == np.float64
    assert dataset.X["flag"].tolist() == ["True", "False", "True", "False"]


def test_numeric_target_classes_sort_numerically(tmp_path):
    # Integer labels with a gap are read as floats; they are still named "2", not "2.0".
    rows = "\n".join(f"{i},{label}" for i, label in enumerate([10, 9, 2, 10, 9, 2, "", 10, 9, 2]))
    path = write(tmp_path, "t.csv", f"x,label\n{rows}\n")
    dataset = load_table(path, target="label", test_size=0.4)
    assert dataset.class_names == ["2", "9", "10"]
    assert len(dataset.y) == 9  # the row with no label is dropped
    np.testing.assert_array_equal(dataset.y, [2, 1, 0, 2, 1, 0, 2, 1, 0])
    assert dataset.X["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0]


def test_text_target_classes_sort_by_value(tmp_path):
    path = write(tmp_path, "t.csv", "x,label\n1,b\n2,a\n3,c\n4,b\n5,a\n6,c\n7,b\n8,a\n9,c\n")
    dataset = load_table(path, target="label", test_size=0.4)
    assert dataset.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(dataset.y, [1, 0, 2, 1, 0, 2, 1, 0, 2])


def test_drop_accepts_a_lone_column_name(tmp_path):
    path = write(tmp_path, "t.csv", GOOD_CSV)
    assert load_table(path, target="label", drop="b").feature_names == ["a"]


# Refusals: one line each, naming the problem


def test_missing_file_is_refused(tmp_path):
    assert "not found" in refusal(tmp_path / "absent.csv")


def test_directory_is_refused(tmp_path):
    assert "not a file" in refusal(write(tmp_path, "x", "").parent)


def test_unsupported_suffix_is_refused(tmp_path):
    message = refusal(write(tmp_path, "t.xlsx", GOOD_CSV))
    assert "unsupported" in message and ".csv" in message and ".parquet" in message


def test_unreadable_file_is_refused(tmp_path, monkeypatch):
    path = write(tmp_path, "t.csv", GOOD_CSV)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    # Patched rather than chmod: the tests may run as root, who can read anything.
    monkeypatch.setattr(Path, "read_bytes", denied)
    assert "Permission denied" in refusal(path)


@pytest.mark.parametrize("content, word", [
    ("a,b,label\n1,2,p\n3,4,p,5,6\n", "tokenizing"),
    ("a,b,label\n1,2,p,9\n3,4,q,9\n", "more fields"),
    ("a,b,label\n1,caf\xe9,p\n".encode("latin-1"), "UTF-8"),
])
def test_malformed_csv_is_refused(tmp_path, content, word):
    message = refusal(write(tmp_path, "t.csv", content))
    assert "cannot read" in message and word in message


def test_invalid_parquet_is_refused(tmp_path):
    message = refusal(write(tmp_path, "t.parquet", GOOD_CSV))
    assert "cannot read" in message and "Parquet" in message


@pytest.mark.parametrize("content, word", [
    ("", "no columns"),
    ("\n\n", "no columns"),
    ("a,b,label\n", "no data rows"),
])
def test_empty_csv_is_refused(tmp_path, content, word):
    message = refusal(write(tmp_path, "t.csv", content))
    assert "empty" in message and word in message


def test_empty_parquet_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.0], "label": ["p"]}).iloc[:0].to_parquet(path)
    assert "empty" in refusal(path)


def test_duplicate_csv_columns_are_refused(tmp_path):
    # pandas would quietly rename the second "a" to "a.1".
    message = refusal(write(tmp_path, "t.csv", "a,b,a,label\n1,2,3,p\n4,5,6,q\n"))
    assert "duplicate" in message and "'a'" in message


def test_duplicate_parquet_columns_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table([pa.array([1, 2]), pa.array([3, 4]), pa.array(["p", "q"])],
                            names=["a", "a", "label"]), path)
    assert "duplicate" in refusal(path)


def test_dropping_an_unknown_column_is_refused(tmp_path):
    message = refusal(write(tmp_path, "t.csv", GOOD_CSV), drop=["a", "nope"])
    assert "drop" in message and "'nope'" in message and "'label'" in message


def test_dropping_the_target_is_refused(tmp_path):
    assert "target" in refusal(write(tmp_path, "t.csv", GOOD_CSV), drop=["label"])


def test_missing_target_lists_the_columns(tmp_path):
    message = refusal(write(tmp_path, "t.csv", GOOD_CSV), target="churn")
    assert "'churn' not found" in message and "'a', 'b', 'label'" in message


def test_missing_target_shortens_a_long_column_list(tmp_path):
    header = ",".join(f"c{i}" for i in range(40))
    message = refusal(write(tmp_path, "t.csv", f"{header}\n" + ",".join("1" * 40) + "\n"))
    assert "not found" in message and "(30 more)" in message and "'c39'" not in message


def test_all_targets_missing_is_refused(tmp_path):
    assert "missing target" in refusal(write(tmp_path, "t.csv", "a,label\n1,\n2,\n3,\n"))


def test_one_class_is_refused(tmp_path):
    message = refusal(write(tmp_path, "t.csv", "a,label\n1,p\n2,p\n3,p\n4,\n"))
    assert "one class" in message and "'p'" in message


def test_a_class_with_one_row_is_named(tmp_path):
    message = refusal(write(tmp_path, "t.csv", GOOD_CSV + "7,x,rare\n"))
    assert "'rare'" in message and "only 1 row" in message


def test_too_small_a_test_part_is_refused(tmp_path):
    # 6 rows, 3 classes: a 20% test part has 2 rows, one short of a row per class.
    path = write(tmp_path, "t.csv", "a,label\n1,p\n2,q\n3,r\n4,p\n5,q\n6,r\n")
    message = refusal(path, test_size=0.2)
    assert "test part" in message and "3 classes" in message


def test_too_small_a_train_part_is_refused(tmp_path):
    path = write(tmp_path, "t.csv", "a,label\n1,p\n2,q\n3,p\n4,q\n")
    assert "train part" in refusal(path, test_size=0.8)


@pytest.mark.parametrize("per_class, n_classes, test_size",
                         itertools.product([2, 3, 5], [2, 3, 4], [0.1, 0.25, 0.5, 0.75]))
def test_class_checks_agree_with_the_stratified_split(tmp_path, per_class, n_classes, test_size):
    labels = [f"k{c}" for c in range(n_classes)] * per_class
    rows = "\n".join(f"{i},{label}" for i, label in enumerate(labels))
    path = write(tmp_path, "t.csv", f"a,label\n{rows}\n")
    try:
        dataset = load_table(path, target="label", test_size=test_size)
    except DataValidationError:
        # Refused only when scikit-learn would have failed too.
        with pytest.raises(ValueError):
            train_test_split(np.arange(len(labels)), labels, test_size=test_size,
                             random_state=0, stratify=labels)
    else:
        split = split_dataset(dataset, test_size=test_size, random_state=0)
        assert set(split.y_train) == set(split.y_test) == set(range(n_classes))


def test_all_empty_feature_column_suggests_drop(tmp_path):
    path = write(tmp_path, "t.csv", "a,notes,label\n1,,p\n2,,q\n3,,p\n4,,q\n5,,p\n6,,q\n")
    message = refusal(path)
    assert "'notes'" in message and "empty" in message and "--drop notes" in message


def test_no_feature_columns_is_refused(tmp_path):
    path = write(tmp_path, "t.csv", GOOD_CSV)
    assert "no feature columns" in refusal(path, drop=["a", "b"])


def test_infinite_values_are_refused(tmp_path):
    path = write(tmp_path, "t.csv", GOOD_CSV.replace("3,x,p", "inf,x,p"))
    assert "infinite" in refusal(path)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_size_is_refused(tmp_path, test_size):
    assert "test_size" in refusal(write(tmp_path, "t.csv", GOOD_CSV), test_size=test_size)


# Splitting


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_split_matches_the_numpy_split(name):
    dataset = load_dataset(name)
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X.to_numpy(), dataset.y, test_size=0.2, random_state=42, stratify=dataset.y)
    np.testing.assert_array_equal(split.X_train.to_numpy(), X_train)
    np.testing.assert_array_equal(split.X_test.to_numpy(), X_test)
    np.testing.assert_array_equal(split.y_train, y_train)
    np.testing.assert_array_equal(split.y_test, y_test)


def test_split_is_stratified_deterministic_and_disjoint():
    # Keep customer_id as a feature here only to tell rows apart.
    dataset = load_table(CHURN_CSV, target="churned")
    a = split_dataset(dataset, test_size=0.25, random_state=7)
    b = split_dataset(dataset, test_size=0.25, random_state=7)
    pd.testing.assert_frame_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert len(a.y_test) == 100 and len(a.y_train) == 300
    assert set(a.X_train["customer_id"]).isdisjoint(a.X_test["customer_id"])
    assert list(a.X_test.index) == list(range(100))
    overall = dataset.y.mean()
    for part in (a.y_train, a.y_test):
        assert abs(part.mean() - overall) <= 1.0 / len(part)
    # The labels still belong to their rows after the split.
    by_id = dict(zip(dataset.X["customer_id"], dataset.y, strict=True))
    assert [by_id[c] for c in a.X_test["customer_id"]] == a.y_test.tolist()
    other = split_dataset(dataset, test_size=0.25, random_state=8)
    assert set(other.X_test["customer_id"]) != set(a.X_test["customer_id"])
