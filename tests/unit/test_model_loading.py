"""The service refuses model files whose sha256 differs from the one recorded at import,
and a model whose warm-up prediction does not fit its metadata."""

from __future__ import annotations

import numpy as np
import pytest

from serving.forms.encoder import Encoder
from serving.forms.linear import LinearPredictor
from serving.model import ModelIntegrityError, load_model
from serving.schema import Table
from tests.unit.conftest import linear_predictor, numeric_schema, save_model_folder

pytestmark = pytest.mark.unit

SCHEMA = numeric_schema(["x", "y"], ["a", "b", "c"])


@pytest.fixture
def model_dir(tmp_path):
    predictor = linear_predictor([[1.0, -1.0], [0.5, 0.5], [-1.0, 0.0]])
    directory = tmp_path / "model"
    return directory, save_model_folder(directory, predictor, schema=SCHEMA, version="1")


def test_the_fixture_hashes_every_file(model_dir):
    directory, metadata = model_dir
    assert sorted(metadata["sha256"]) == sorted(p.name for p in directory.iterdir())
    assert {"encoder.npz", "encoder.json", "linear_params.npz"} <= set(metadata["sha256"])


def test_a_verified_model_loads_and_predicts(model_dir):
    directory, metadata = model_dir
    loaded = load_model(directory, metadata, tag="m:1")
    assert loaded.info["features"] == ["x", "y"] and loaded.summary == {"name": "M", "version": "1"}
    assert loaded.info["served_form"] == "linear" and loaded.predictor.form == "linear"
    assert loaded.class_names == ["a", "b", "c"]
    probabilities = loaded.predictor.predict_proba(Table.from_numbers(np.array([[1.0, 2.0]])))
    assert probabilities.shape == (1, 3) and probabilities.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["linear_params.npz", "encoder.npz", "encoder.json"])
def test_a_tampered_file_is_refused_before_loading(model_dir, name):
    directory, metadata = model_dir
    tampered = LinearPredictor(encoder=Encoder(fill=np.ones(2), mean=np.ones(2), scale=np.full(2, 2.0),
                                               categories=[], missing="?"),
                               coef=np.zeros((3, 2)), intercept=np.ones(3))
    other = directory.parent / "other"
    other.mkdir()
    tampered.save(other)
    (directory / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ModelIntegrityError, match=f"{name} does not match its sha256"):
        load_model(directory, metadata, tag="m:1")


def test_a_missing_file_is_refused(model_dir):
    directory, metadata = model_dir
    (directory / "encoder.json").unlink()
    with pytest.raises(ModelIntegrityError, match="encoder.json does not match"):
        load_model(directory, metadata, tag="m:1")


def test_a_model_without_recorded_hashes_is_refused(model_dir):
    directory, metadata = model_dir
    with pytest.raises(ModelIntegrityError, match="no sha256 recorded"):
        load_model(directory, {**metadata, "sha256": {}}, tag="m:1")


def test_a_model_imported_without_a_served_form_is_refused(model_dir):
    directory, metadata = model_dir
    old = {k: v for k, v in metadata.items() if k != "served_form"}
    with pytest.raises(ModelIntegrityError, match="older version"):
        load_model(directory, old, tag="m:1")


@pytest.mark.parametrize("class_names", [["a", "b"], ["a", "b", "c", "d"]])
def test_class_names_must_match_the_model_at_warm_up(model_dir, class_names):
    directory, metadata = model_dir
    schema = numeric_schema(["x", "y"], class_names).to_dict()
    with pytest.raises(ModelIntegrityError, match="warm-up"):
        load_model(directory, {**metadata, "schema": schema}, tag="m:1")


@pytest.mark.parametrize("feature_names", [["x"], ["x", "y", "z"]])
def test_feature_count_must_match_the_model_at_warm_up(model_dir, feature_names):
    directory, metadata = model_dir
    schema = numeric_schema(feature_names, ["a", "b", "c"]).to_dict()
    with pytest.raises(ModelIntegrityError):
        load_model(directory, {**metadata, "schema": schema}, tag="m:1")


@pytest.mark.parametrize("name, arrays", [
    ("encoder.npz", {"fill": np.array([0.0, {"x": 1}], dtype=object), "mean": np.zeros(2), "scale": np.ones(2)}),
    ("linear_params.npz", {"coef": np.zeros((3, 2)), "intercept": np.array([0, 0, print], dtype=object)}),
])
def test_an_npz_that_needs_unpickling_is_refused_even_with_matching_hashes(model_dir, name, arrays):
    """An object array is stored as a pickle inside the .npz: refused, not unpickled, even when the
    recorded sha256 is that file's (as if it had been imported so)."""
    from tests.unit.conftest import file_hashes

    directory, metadata = model_dir
    np.savez(directory / name, **arrays)  # numpy pickles object arrays when saving them
    with pytest.raises(ModelIntegrityError,
                       match=r"the linear form of m:1 cannot be read from its files: .*allow_pickle=False"):
        load_model(directory, {**metadata, "sha256": file_hashes(directory)}, tag="m:1")
