"""The service refuses model files whose sha256 differs from the one recorded at import."""

from __future__ import annotations

import numpy as np
import pytest

from serving.model import ModelIntegrityError, load_model
from serving.predictor import LinearPredictor
from tests.unit.conftest import save_model_folder

pytestmark = pytest.mark.unit


@pytest.fixture
def model_dir(tmp_path):
    predictor = LinearPredictor(mean=np.zeros(2), scale=np.ones(2),
                                coef=np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 0.0]]),
                                intercept=np.zeros(3))
    return tmp_path, save_model_folder(tmp_path, predictor, class_names=["a", "b", "c"], version="1")


def test_a_verified_model_loads_and_predicts(model_dir):
    directory, metadata = model_dir
    loaded = load_model(directory, metadata, tag="m:1")
    assert loaded.info["features"] == ["x", "y"] and loaded.summary == {"name": "M", "version": "1"}
    assert loaded.predictor.predict_proba(np.array([[1.0, 2.0]])).sum() == pytest.approx(1.0)


def test_a_tampered_file_is_refused_before_loading(model_dir):
    directory, metadata = model_dir
    tampered = LinearPredictor(mean=np.ones(2), scale=np.ones(2), coef=np.zeros((3, 2)),
                               intercept=np.zeros(3))
    tampered.save(directory)
    with pytest.raises(ModelIntegrityError, match="does not match its sha256"):
        load_model(directory, metadata, tag="m:1")


def test_a_model_without_recorded_hashes_is_refused(model_dir):
    directory, metadata = model_dir
    with pytest.raises(ModelIntegrityError, match="no sha256 recorded"):
        load_model(directory, {**metadata, "sha256": {}}, tag="m:1")


def test_names_must_match_the_parameters(model_dir):
    directory, metadata = model_dir
    with pytest.raises(ModelIntegrityError, match="names do not match"):
        load_model(directory, {**metadata, "feature_names": ["x"]}, tag="m:1")
