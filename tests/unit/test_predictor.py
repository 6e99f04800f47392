"""The numpy fast path must give sklearn's probabilities exactly (to 1e-12)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.predictor import LinearPredictor
from training.data import load_dataset, split_dataset
from training.train import HyperParams, fit_pipeline

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("dataset_name", ["iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_numpy_path_matches_sklearn_predict_proba(dataset_name, penalty, tmp_path):
    dataset = load_dataset(dataset_name)
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(HyperParams(C=1.0, penalty=penalty), split,
                            feature_names=dataset.feature_names, random_state=42)
    predictor = LinearPredictor.load(LinearPredictor.from_pipeline(pipeline).save(tmp_path).parent)
    frame = pd.DataFrame(dataset.X, columns=dataset.feature_names)
    expected = pipeline.predict_proba(frame)
    for rows in (dataset.X[:1], dataset.X[:7], dataset.X):  # one row, a few, all
        got = predictor.predict_proba(rows.copy())
        np.testing.assert_allclose(got, expected[: len(rows)], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predictor.predict_proba(dataset.X).argmax(axis=1),
                                  pipeline.predict(frame))


def test_extreme_inputs_stay_probabilities():
    dataset = load_dataset("iris")
    split = split_dataset(dataset, test_size=0.2, random_state=42)
    pipeline = fit_pipeline(HyperParams(C=10.0, penalty="l2"), split,
                            feature_names=dataset.feature_names, random_state=42)
    predictor = LinearPredictor.from_pipeline(pipeline)
    probabilities = predictor.predict_proba(np.array([[1e300, -1e300, 1e300, 0.0]]))
    assert np.all(np.isfinite(probabilities))
    assert probabilities.sum() == pytest.approx(1.0)


def test_other_pipelines_are_refused():
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    with pytest.raises(TypeError, match="StandardScaler then LogisticRegression"):
        LinearPredictor.from_pipeline(Pipeline([("tree", DecisionTreeClassifier())]))
