"""Every served form must answer as the registered pipeline does.

The linear form is sklearn's own arithmetic, so it must match to 1e-12; every other form must
give the same labels and probabilities within the importer's tolerance (1e-6), after a save and
load round trip, on a numeric table and on a mixed one with missing values and unseen text.
"""

from __future__ import annotations

import os
import shutil
import threading
from functools import cache

import numpy as np
import pandas as pd
import pytest
import threadpoolctl

from serving.forms import FORMS, PARALLEL_ROWS, RowSlices, Unsupported, convert, load_predictor
from serving.settings import Settings, model_threads, usable_cores
from serving.forms.encoder import Encoder
from serving.schema import Table, TableSchema, TextCodes
from training.data import Dataset, Split, load_dataset, split_dataset
from training.models import FAMILIES, MISSING_CATEGORY, GridPoint, build_pipeline, make_grid
from training.runs import table_schema
from training.train import fit_pipeline
from tests.unit.conftest import table_from_frame

pytestmark = pytest.mark.unit

TOLERANCE = 1e-6  # what the importer accepts (release.verify.TOLERANCE)
# Which forms can express which family; every family can always be served as itself.
SUPPORTED = {
    "logistic_regression": {"linear", "onnx", "sklearn"},
    "random_forest": {"onnx", "compiled", "sklearn"},
    "hist_gradient_boosting": {"compiled", "sklearn"},
}
HAS_GCC = shutil.which("gcc") is not None


def rows(table: Table, index) -> Table:
    return Table(numeric=table.numeric[index], categorical=table.categorical[index])


# The linear form: sklearn's numbers exactly


@pytest.mark.parametrize("dataset_name", ["iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_linear_form_matches_sklearn_predict_proba(dataset_name, penalty, tmp_path):
    dataset = load_dataset(dataset_name)
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(GridPoint("logistic_regression", {"C": 1.0, "penalty": penalty}), split,
                            dataset=dataset, random_state=42)
    schema = table_schema(dataset)
    convert("linear", pipeline, schema).save(tmp_path)
    predictor = load_predictor("linear", tmp_path, schema)
    assert predictor.form == "linear"
    expected = pipeline.predict_proba(dataset.X)
    table = table_from_frame(dataset.X, schema)
    for n in (1, 7, len(table)):  # one row, a few, all
        got = predictor.predict_proba(rows(table, slice(0, n)))
        np.testing.assert_allclose(got, expected[:n], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predictor.predict_proba(table).argmax(axis=1), pipeline.predict(dataset.X))
    # Rows sent as plain lists of numbers are the same table.
    plain = Table.from_numbers(np.ascontiguousarray(dataset.X.to_numpy()))
    np.testing.assert_array_equal(predictor.predict_proba(plain), predictor.predict_proba(table))


@pytest.mark.parametrize("dataset_name", ["iris", "breast_cancer"])  # multinomial and binary
def test_the_one_row_path_gives_the_numpy_paths_bits(dataset_name):
    import copy

    dataset = load_dataset(dataset_name)
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(GridPoint("logistic_regression", {"C": 10.0, "penalty": "l2"}), split,
                            dataset=dataset, random_state=42)
    predictor = convert("linear", pipeline, table_schema(dataset))
    numpy_only = copy.copy(predictor)
    object.__setattr__(numpy_only, "_row_shape", None)  # every table through encode() and numpy
    n = predictor.coef.shape[1]
    rng = np.random.default_rng(0)
    rows = dataset.X.to_numpy()[::7].tolist() + [
        (rng.normal(size=n) * rng.choice([1, 1e3, 1e50, 1e100, 1e300], size=n)).tolist() for _ in range(300)]
    rows += [[float("nan")] * n, [1e300, -1e300] * (n // 2) + [0.0] * (n % 2)]
    rows[-3][0] = float("nan")
    with np.errstate(all="ignore"):
        for row in rows:
            expected = numpy_only.predict_proba(Table.from_numbers(np.array([row])))
            np.testing.assert_array_equal(predictor.predict_proba(Table.from_numbers(np.array([row]))), expected)
            np.testing.assert_array_equal(predictor.predict_row(row), expected[0])


def test_extreme_inputs_stay_probabilities():
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(GridPoint("logistic_regression", {"C": 10.0, "penalty": "l2"}), split,
                            dataset=dataset, random_state=42)
    predictor = convert("linear", pipeline, table_schema(dataset))
    probabilities = predictor.predict_proba(Table.from_numbers(np.array([[1e300, -1e300, 1e300, 0.0]])))
    assert np.all(np.isfinite(probabilities))
    assert probabilities.sum() == pytest.approx(1.0)


def test_other_pipelines_are_refused_by_the_linear_form():
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    schema = table_schema(load_dataset("iris"))
    with pytest.raises(Unsupported, match="preprocessing then a classifier"):
        convert("linear", Pipeline([("tree", DecisionTreeClassifier())]), schema)
    assert issubclass(Unsupported, TypeError)


def test_an_unknown_form_is_a_value_error(tmp_path):
    schema = table_schema(load_dataset("iris"))
    with pytest.raises(ValueError, match="unknown served form 'pickle'"):
        convert("pickle", None, schema)
    with pytest.raises(ValueError, match="unknown served form"):
        load_predictor("pickle", tmp_path, schema)


# Every family, every form


def mixed_frame(rows: int, *, seed: int, unseen: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Two numeric columns (one with missing values) and two text columns (one with missing values)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, rows)
    income = rng.lognormal(10, 0.5, rows)
    colours = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, rows)]
    plans = np.array(["basic", "plus", "pro", "team"], dtype=object)[rng.integers(0, 4, rows)]
    score = (age - 40) / 12 + (colours == "red") - (plans == "basic") + rng.normal(0, 0.7, rows)
    y = np.digitize(score, [-0.5, 0.6]).astype(np.int64)  # three classes
    age[rng.random(rows) < 0.15] = np.nan
    colours[rng.random(rows) < 0.15] = np.nan
    if unseen:  # text the encoder never saw, alone and with missing values
        colours[:4] = "purple"
        plans[2:6] = "enterprise"
    frame = pd.DataFrame({"age": age, "colour": pd.Series(colours, dtype=object), "income": income,
                          "plan": pd.Series(plans, dtype=object)})
    return frame, y


def mixed_dataset() -> Dataset:
    X, y = mixed_frame(240, seed=1)
    return Dataset(name="mixed", X=X, y=y, class_names=["low", "mid", "high"],
                   numeric_features=["age", "income"], categorical_features=["colour", "plan"],
                   sha256="", source="test")


def mixed_probe() -> pd.DataFrame:
    """Rows the pipeline never saw: unseen categories, and rows with every value missing."""
    frame, _ = mixed_frame(40, seed=2, unseen=True)
    frame.loc[[10, 11]] = np.nan
    frame.loc[12, ["colour", "plan"]] = np.nan
    frame.loc[13, ["age", "income"]] = np.nan
    return frame


@cache
def case(dataset_name: str, family: str):
    """The fitted pipeline of the family's first grid point, its schema, and rows to compare on."""
    if dataset_name == "iris":
        dataset = load_dataset("iris")
        split = split_dataset(dataset, test_size=0.2, random_state=0)
        probe = dataset.X
    else:
        dataset = mixed_dataset()
        split = Split(X_train=dataset.X, X_test=dataset.X.iloc[:0], y_train=dataset.y, y_test=dataset.y[:0])
        probe = pd.concat([mixed_probe(), dataset.X], ignore_index=True)
    pipeline = build_pipeline(make_grid([family])[0], numeric=dataset.numeric_features,
                              categorical=dataset.categorical_features, random_state=0)
    pipeline.fit(split.X_train, split.y_train)
    return pipeline, table_schema(dataset), probe


def save_mlflow_model(pipeline, path) -> None:
    """The pipeline as training logs it: an MLflow sklearn model in skops format."""
    import mlflow.sklearn
    import skops.io

    mlflow.sklearn.save_model(
        pipeline, str(path), serialization_format="skops",
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))


def test_the_mixed_probe_reaches_unseen_text_and_missing_rows():
    probe, (X, _) = mixed_probe(), mixed_frame(240, seed=1)
    assert not set(probe["colour"].dropna()) <= set(X["colour"].dropna())
    assert not set(probe["plan"].dropna()) <= set(X["plan"].dropna())
    assert probe.isna().all(axis=1).sum() == 2 and X["age"].isna().any() and X["colour"].isna().any()
    assert (probe["colour"] == "purple").any() and (probe["plan"] == "enterprise").any()


def test_one_row_tables_with_text_give_the_numpy_paths_bits():
    import copy

    pipeline, schema, probe = case("mixed", "logistic_regression")
    predictor = convert("linear", pipeline, schema)
    numpy_only = copy.copy(predictor)
    object.__setattr__(numpy_only, "_row_shape", None)  # every table through encode() and numpy
    assert predictor._row_shape == (len(schema.numeric), len(schema.categorical))
    table = table_from_frame(probe, schema)
    for i in range(len(table)):  # unseen text, missing text and numbers, every value missing
        row = Table(numeric=table.numeric[i:i + 1], categorical=table.categorical[i:i + 1])
        expected = numpy_only.predict_proba(row)
        np.testing.assert_array_equal(predictor.predict_proba(row), expected)
        # The one-record lane of /predict: the row as Python values (a tuple of texts, as read).
        np.testing.assert_array_equal(predictor.predict_row(row.numeric[0].tolist(),
                                                            tuple(row.categorical[0].tolist())), expected[0])
        twice = Table(numeric=np.repeat(row.numeric, 2, axis=0), categorical=np.repeat(row.categorical, 2, axis=0))
        assert predictor.encoder.encode_row(row.numeric[0].tolist(), row.categorical[0].tolist()) == \
            predictor.encoder.encode(twice)[0].tolist()  # the numpy path's bits


def test_text_given_as_codes_encodes_as_text():
    """Table.codes (indices into each column's distinct values, as batch scoring reads Arrow's
    dictionaries) gives encode's numbers, unseen and missing text included."""
    pipeline, schema, probe = case("mixed", "logistic_regression")
    encoder = convert("linear", pipeline, schema).encoder
    table = table_from_frame(probe, schema)
    words, indices = [], np.empty(table.categorical.shape, dtype=np.intp)
    for j in range(table.categorical.shape[1]):
        column = table.categorical[:, j].tolist()
        distinct = list(dict.fromkeys(column))[::-1]  # any order, None anywhere
        indices[:, j] = [distinct.index(value) for value in column]
        words.append(np.array(distinct, dtype=object))
    coded = Table(table.numeric, table.categorical, TextCodes(indices, tuple(words)))
    assert np.array_equal(encoder.encode(coded), encoder.encode(table))
    rows = np.array([3, 0, 7])
    assert np.array_equal(encoder.encode(coded.take(rows)), encoder.encode(table.take(rows)))


def test_the_supported_table_covers_every_family_and_form():
    assert set(SUPPORTED) == set(FAMILIES)
    assert set().union(*SUPPORTED.values()) == set(FORMS)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dataset_name", ["iris", "mixed"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_supported_form_answers_as_the_pipeline(family, dataset_name, form, tmp_path):
    if form == "compiled" and not HAS_GCC:
        pytest.skip("the compiled form needs a C compiler (gcc), and there is none")
    pipeline, schema, probe = case(dataset_name, family)
    if form not in SUPPORTED[family]:
        with pytest.raises(Unsupported):
            convert(form, pipeline, schema)
        return
    predictor = convert(form, pipeline, schema)
    assert predictor.form == form
    if form == "sklearn":  # the service reads it from the MLflow model inside the Bento model
        save_mlflow_model(pipeline, tmp_path / "mlflow_model")
    predictor.save(tmp_path)
    loaded = load_predictor(form, tmp_path, schema)
    assert loaded.form == form
    expected = pipeline.predict_proba(probe)
    table = table_from_frame(probe, schema)
    for answer in (predictor, loaded):
        got = answer.predict_proba(table)
        assert got.shape == expected.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_array_equal(got.argmax(axis=1), pipeline.predict(probe))
        np.testing.assert_allclose(answer.predict_proba(rows(table, slice(3, 4))), expected[3:4],
                                   rtol=0, atol=TOLERANCE)


# The encoder: the ColumnTransformer, exactly


@pytest.mark.parametrize("dataset_name", ["iris", "mixed"])
def test_the_encoder_equals_the_column_transformer(dataset_name, tmp_path):
    pipeline, schema, probe = case(dataset_name, "logistic_regression")
    preprocess = pipeline.named_steps["preprocess"]
    encoder = Encoder.from_preprocessor(preprocess, schema)
    table = table_from_frame(probe, schema)
    expected = preprocess.transform(probe)
    assert np.array_equal(encoder.encode(table), expected)
    assert np.array_equal(encoder.encode(table_from_frame(probe.iloc[:0], schema)), expected[:0])
    encoder.save(tmp_path)
    assert np.array_equal(Encoder.load(tmp_path).encode(table), expected)
    assert encoder.n_outputs == expected.shape[1]


def test_the_encoder_on_missing_and_unseen_text():
    pipeline, schema, _ = case("mixed", "logistic_regression")
    preprocess = pipeline.named_steps["preprocess"]
    encoder = Encoder.from_preprocessor(preprocess, schema)
    assert encoder.missing == MISSING_CATEGORY
    assert schema.numeric == ["age", "income"] and schema.categorical == ["colour", "plan"]
    frame = pd.DataFrame({"age": [np.nan, np.nan, 30.0],
                          "colour": pd.Series([np.nan, "purple", "red"], dtype=object),
                          "income": [np.nan, 1.0, np.nan],
                          "plan": pd.Series([np.nan, "enterprise", None], dtype=object)})
    table = table_from_frame(frame, schema)
    assert table.categorical.tolist() == [[None, None], ["purple", "enterprise"], ["red", None]]
    encoded = encoder.encode(table)
    assert np.array_equal(encoded, preprocess.transform(frame))
    n_colours = len(encoder.categories[0])
    onehot = encoded[:, 2:]
    # Missing text is a category of its own; unseen text is all zeros.
    assert onehot[0, encoder.categories[0].index(MISSING_CATEGORY)] == 1.0
    assert MISSING_CATEGORY not in encoder.categories[1] and not onehot[0, n_colours:].any()
    assert not onehot[1].any()
    # Missing numbers are the training medians, scaled.
    numeric = preprocess.named_transformers_["numeric"]
    medians = numeric.named_steps["impute"].statistics_
    np.testing.assert_array_equal(encoded[0, :2], numeric.named_steps["scale"].transform([medians])[0])


@pytest.mark.parametrize("change, words", [
    ("scaler", "numeric preprocessing"),
    ("onehot", "text preprocessing"),
    ("columns", "numeric preprocessing"),
])
def test_the_encoder_refuses_preprocessing_it_cannot_copy(change, words):
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

    _, schema, _ = case("mixed", "logistic_regression")
    dataset = mixed_dataset()
    other = build_pipeline(make_grid(["logistic_regression"])[0], numeric=dataset.numeric_features,
                           categorical=dataset.categorical_features, random_state=0)
    steps = other.named_steps["preprocess"].transformers
    if change == "scaler":
        steps[0][1].steps[1] = ("scale", MinMaxScaler())
    elif change == "onehot":
        steps[1][1].steps[1] = ("onehot", OneHotEncoder(handle_unknown="error", sparse_output=False))
    else:
        other.named_steps["preprocess"].transformers[0] = ("numeric", steps[0][1], ["income", "age"])
    other.fit(dataset.X, dataset.y)
    with pytest.raises(Unsupported, match=words):
        Encoder.from_preprocessor(other.named_steps["preprocess"], schema)
    for form in FORMS[:-1]:  # every form but the pipeline itself needs the encoder
        with pytest.raises(Unsupported):
            convert(form, other, schema)


def test_a_schema_of_other_columns_is_refused():
    pipeline, schema, _ = case("mixed", "logistic_regression")
    renamed = TableSchema.from_dict({**schema.to_dict(), "features": [
        {**f, "name": f["name"].upper()} for f in schema.to_dict()["features"]]})
    with pytest.raises(Unsupported):
        convert("linear", pipeline, renamed)


# Loading for serving never unpickles (README, Security)

# Run in a fresh interpreter: the libraries the load uses are imported first (what they do when
# imported is not the model's files), then every way to unpickle is watched, the model folder is
# loaded as the service loads it and predicts, and what was seen is printed as JSON. A control at
# the end unpickles on purpose, so the watch is shown to see what it is meant to see.
NO_PICKLE_PROBE = r"""
import _pickle, io, json, pickle, sys
from pathlib import Path

import numpy as np
import numpy.lib.format
import onnxruntime, skops.io, sklearn.ensemble, sklearn.linear_model, threadpoolctl, yaml

import serving.forms.compiled, serving.forms.linear, serving.forms.onnx, serving.forms.sklearn
from serving.model import load_model
from serving.schema import Table

try:
    import tl2cgen
except ImportError:  # the compiled form is not tested without it
    pass

seen = []


def watch(event, args):
    if event == "pickle.find_class":  # any unpickler, C or Python, resolving a global
        seen.append(f"pickle.find_class {args[0]}.{args[1]}")


def refuse(name, original):
    def refused(*args, **kwargs):
        seen.append(name)
        raise RuntimeError(f"{name} called")
    return refused


class RefusedUnpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        seen.append("pickle.Unpickler")
        raise RuntimeError("pickle.Unpickler called")


def allow_pickle_watched(name, original):
    def watched(*args, **kwargs):
        if kwargs.get("allow_pickle"):
            seen.append(f"{name}(allow_pickle=True)")
        return original(*args, **kwargs)
    return watched


sys.addaudithook(watch)
pickle.load, pickle.loads = refuse("pickle.load", pickle.load), refuse("pickle.loads", pickle.loads)
pickle.Unpickler = RefusedUnpickler
np.load = allow_pickle_watched("numpy.load", np.load)
numpy.lib.format.read_array = allow_pickle_watched("numpy.lib.format.read_array", numpy.lib.format.read_array)

directory, metadata_file, table_file = map(Path, sys.argv[1:4])
metadata = json.loads(metadata_file.read_text())
saved = np.load(table_file, allow_pickle=False)
loaded = load_model(directory, metadata, tag="m:1")
table = Table(numeric=saved["numeric"], categorical=np.array(json.loads(saved["categorical"].item()), dtype=object))
probabilities = loaded.predictor.predict_proba(table)
during_load = list(seen)

# The control: each watched way, used on purpose.
seen.clear()
for attempt in (lambda: pickle.loads(pickle.dumps(1)),
                lambda: pickle.Unpickler(io.BytesIO(b"")),
                lambda: np.load(io.BytesIO(), allow_pickle=True),
                lambda: _pickle.loads(_pickle.dumps(print))):  # past the patches: the audit hook's
    try:
        attempt()
    except Exception:
        pass
buffer = io.BytesIO()
np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
buffer.seek(0)
try:
    numpy.lib.format.read_array(buffer, allow_pickle=True)
except Exception:
    pass
sys.stdout.write(json.dumps({"during_load": during_load, "control": seen,
                             "form": loaded.predictor.form, "probabilities": probabilities.tolist()}))
"""

# A family each form serves; trees for the sklearn form, whose Cython objects pickle would rebuild.
FAMILY_OF_FORM = {"linear": "logistic_regression", "onnx": "random_forest",
                  "compiled": "hist_gradient_boosting", "sklearn": "random_forest"}


@pytest.mark.parametrize("form", FORMS)
def test_loading_each_form_for_serving_never_unpickles(form, tmp_path):
    """serving.model.load_model, then a prediction, with every way to unpickle watched."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT
    from tests.unit.conftest import save_model_folder

    if form == "compiled" and not HAS_GCC:
        pytest.skip("the compiled form needs a C compiler (gcc), and there is none")
    pipeline, schema, probe = case("mixed", FAMILY_OF_FORM[form])
    directory = tmp_path / "model"
    if form == "sklearn":  # the service reads it from the MLflow model inside the Bento model
        save_mlflow_model(pipeline, directory / "mlflow_model")
    metadata = save_model_folder(directory, convert(form, pipeline, schema), schema=schema, version="1")
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    table = table_from_frame(probe, schema)
    # The rows travel without pickle too: numbers as .npy, text as JSON.
    np.savez(tmp_path / "table.npz", numeric=table.numeric,
             categorical=np.array(json.dumps(table.categorical.tolist())))
    proc = subprocess.run([sys.executable, "-c", NO_PICKLE_PROBE, str(directory), str(tmp_path / "metadata.json"),
                           str(tmp_path / "table.npz")], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)  # only a guard against a hang
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["form"] == form
    assert report["during_load"] == []
    np.testing.assert_allclose(report["probabilities"], pipeline.predict_proba(probe), rtol=0, atol=TOLERANCE)
    assert {"pickle.loads", "pickle.Unpickler", "numpy.load(allow_pickle=True)",
            "numpy.lib.format.read_array(allow_pickle=True)"} <= set(report["control"])
    assert any(event.startswith("pickle.find_class") for event in report["control"]), report["control"]


@pytest.mark.parametrize("form", ["onnx", "compiled"])
def test_more_threads_give_the_same_bits(form, tmp_path):
    """A large input is scored in slices on several threads (the service's large requests): to the
    bit what one thread answers, whatever the size."""
    if form == "compiled" and not HAS_GCC:
        pytest.skip("the compiled form needs a C compiler (gcc), and there is none")
    pipeline, schema, _ = case("mixed", FAMILY_OF_FORM[form])
    convert(form, pipeline, schema).save(tmp_path)
    # The sklearn form, loaded by other tests of this process, caps OpenMP at one thread.
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        one, two, three = (load_predictor(form, tmp_path, schema, threads=n) for n in (1, 2, 3))
        assert (one.threads, two.threads, three.threads) == (1, 2, 3)
        table = table_from_frame(mixed_frame(5000, seed=7, unseen=True)[0], schema)
        for size in (1, 7, 60, 130, 2 * PARALLEL_ROWS - 1, 2 * PARALLEL_ROWS, 1000, 5000):
            part = rows(table, slice(0, size))
            expected = one.predict_proba(part)
            assert np.array_equal(expected, two.predict_proba(part)), size
            assert np.array_equal(expected, three.predict_proba(part)), size


def test_row_slices_score_a_large_input_on_several_threads_in_order():
    calls: list[tuple[str, int, int]] = []  # thread, first row, rows
    together = threading.Barrier(3, timeout=60)  # passed only when 3 slices run at once

    def double(X: np.ndarray) -> np.ndarray:
        calls.append((threading.current_thread().name, int(X[0, 0]), len(X)))
        if len(X) >= PARALLEL_ROWS:
            together.wait()
        return X * 2

    X = np.arange(3 * PARALLEL_ROWS + 1, dtype=np.float64).reshape(-1, 1)
    slices = RowSlices(3)
    assert np.array_equal(slices.run(double, X), X * 2)
    assert sorted((first, count) for _, first, count in calls) == [
        (0, PARALLEL_ROWS), (PARALLEL_ROWS, PARALLEL_ROWS), (2 * PARALLEL_ROWS, PARALLEL_ROWS + 1)]
    assert len({thread for thread, _, _ in calls}) == 3
    # Fewer than two slices' rows: one call, on the calling thread; threads=1: always one call.
    together = threading.Barrier(1)
    for threads, size in ((3, 2 * PARALLEL_ROWS - 1), (1, len(X))):
        calls.clear()
        assert np.array_equal(RowSlices(threads).run(double, X[:size]), X[:size] * 2)
        assert calls == [(threading.current_thread().name, 0, size)]


def test_model_threads_are_the_setting_else_a_share_of_the_usable_cores(monkeypatch):
    monkeypatch.delenv("MODEL_THREADS", raising=False)  # the default, whatever the shell exports
    assert model_threads(Settings(MODEL_THREADS=3), workers=2) == 3
    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert model_threads(Settings(), workers=1) == cores
    assert model_threads(Settings(), workers=cores + 1) == 1


@pytest.mark.parametrize("family", ["random_forest", "hist_gradient_boosting"])
def test_compiling_prints_nothing(family, capfd):
    if not HAS_GCC:
        pytest.skip("the compiled form needs a C compiler (gcc), and there is none")
    pipeline, schema, _ = case("iris", family)
    capfd.readouterr()
    convert("compiled", pipeline, schema)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


@pytest.mark.parametrize("shift, chosen", [(0.5, "linear"), (2.0, "sklearn")])
def test_the_import_passes_over_a_form_that_differs_by_more_than_the_tolerance(shift, chosen, tmp_path,
                                                                               monkeypatch):
    """The judge itself: a linear form whose answers are moved by shift x 1e-6 (README: "within
    1e-6") is taken below the tolerance and passed over, for the next form, above it. The forms
    here all agree to 1e-15, so the difference has to be put in by hand."""
    import release.verify as importer

    assert importer.TOLERANCE == 1e-6
    pipeline, schema, probe = case("iris", "logistic_regression")
    save_mlflow_model(pipeline, tmp_path / importer.MLFLOW_MODEL_DIR)
    real_load = importer.load_predictor

    class Moved:
        """A loaded form whose probabilities move one class up and another down: same labels."""

        def __init__(self, predictor):
            self.predictor = predictor

        def predict_proba(self, table):
            probabilities = self.predictor.predict_proba(table).copy()
            probabilities[:, 1] += shift * importer.TOLERANCE
            probabilities[:, 2] -= shift * importer.TOLERANCE
            return probabilities

    def shifted_load(form, directory, schema):
        predictor = real_load(form, directory, schema)
        return Moved(predictor) if form == "linear" else predictor

    monkeypatch.setattr(importer, "load_predictor", shifted_load)
    check = importer.choose_form(pipeline, schema, table_from_frame(probe, schema), directory=tmp_path,
                                 forms=("linear", "sklearn"))
    assert check.form == chosen
    if chosen == "sklearn":
        assert check.tried["linear"].startswith("differs from the model: largest difference 2e-06")
