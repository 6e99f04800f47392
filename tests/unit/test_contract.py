"""Request parsing: every bad body becomes a RequestError with a 4xx and a sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.contract import (
    RequestError,
    format_predictions,
    parse_features,
    parse_features_strictly,
    read_plain_features,
)

pytestmark = pytest.mark.unit


def parse(body: bytes, n_features: int = 2, max_rows: int = 3) -> np.ndarray:
    return parse_features(body, n_features=n_features, max_rows=max_rows)


def test_rows_and_a_flat_row_are_accepted():
    np.testing.assert_array_equal(parse(b'{"features": [[1, 2.5], [3, 4]]}'), [[1, 2.5], [3, 4]])
    np.testing.assert_array_equal(parse(b'{"features": [1, 2]}'), [[1, 2]])
    assert parse(b'{"features": [1, 2]}').dtype == np.float64


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "empty"),
    (b"{", 400, "not valid JSON"),
    (b"[[1, 2]]", 400, "JSON object"),
    (b'{"rows": [[1, 2]]}', 400, "unknown key"),
    (b'{"features": [[1, 2]], "extra": 1}', 400, "unknown key"),
    (b"{}", 400, "missing"),
    (b'{"features": []}', 400, "non-empty"),
    (b'{"features": null}', 400, "non-empty"),
    (b'{"features": [[1, 2], [3]]}', 422, "row 1 has 1 values"),
    (b'{"features": [[1, 2, 3]]}', 422, "takes 2 features"),
    (b'{"features": [[1, "2"]]}', 422, "not a number"),
    (b'{"features": [[1, true]]}', 422, "not a number"),
    (b'{"features": [[1, null]]}', 422, "not a number"),
    (b'{"features": [[1, [2]]]}', 422, "not a number"),
    (b'{"features": [[1, NaN]]}', 400, "NaN is not a number"),
    (b'{"features": [[1, Infinity]]}', 400, "Infinity is not a number"),
    (b'{"features": [[1, -Infinity]]}', 400, "not a number"),
    (b'{"features": [[1, 1e400]]}', 422, "outside the accepted range"),
    (b'{"features": [[1, -1.5e100]]}', 422, "row 0 holds a value outside"),
    (b'{"features": [[1, 1' + b"0" * 400 + b']]}', 422, "64-bit float"),
    (b'{"features": [[1, 2]], "features": [[3, 4]]}', 400, "duplicate keys"),
    (b'{"features": [[1, 2], [1, 2], [1, 2], [1, 2]]}', 422, "limit of 3"),
    (b'{"features": [[1, 2], 3]}', 400, "row 1 is not a list"),
    (b'{"features": "ab"}', 400, "non-empty list"),
    (b"\xff\xfe{", 400, "UTF-8"),
    (b"[" * 100000 + b"]" * 100000, 400, "nested too deeply"),
])
def test_bad_bodies_raise_request_errors(body, status, words):
    with pytest.raises(RequestError) as info:
        parse(body)
    assert info.value.status == status
    assert words in info.value.message


def outcome(parse, body: bytes) -> object:
    """What a parser makes of body: the rows, or the error it answers with."""
    try:
        return parse(body, n_features=2, max_rows=3).tolist()
    except RequestError as error:
        return error.status, error.message, error.reason


numbers = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                    st.floats(allow_nan=False), st.sampled_from([1e100, -1e100, 1.0000000000000002e100]))
values = st.one_of(numbers, numbers, numbers, st.booleans(), st.none(), st.text(max_size=2),
                   st.lists(numbers, max_size=2), st.dictionaries(st.text(max_size=2), numbers, max_size=1))
documents = st.one_of(
    st.fixed_dictionaries({"features": st.lists(st.lists(values, max_size=3), max_size=4)}),
    st.fixed_dictionaries({"features": st.lists(values, max_size=3)}),
    st.dictionaries(st.sampled_from(["features", "extra"]), st.lists(st.lists(numbers, max_size=3), max_size=4)),
)
json_bodies = st.builds(lambda document, separators, indent: json.dumps(
    document, separators=separators, indent=indent).encode(),
    documents, st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]), st.sampled_from([None, 0, 1]))
# Text made only of what the fast path lets through, valid JSON or not.
number_soup = st.text(alphabet="0123456789+-.eE,[] \n", max_size=30).map(
    lambda text: b'{"features":' + text.encode() + b"}")


@settings(max_examples=600, deadline=None)
@given(body=st.one_of(json_bodies, number_soup))
def test_the_fast_path_agrees_with_the_strict_path(body):
    assert outcome(parse_features, body) == outcome(parse_features_strictly, body)


@pytest.mark.parametrize("document", [{"features": [[1, 2.5], [3e-5, -4]]}, {"features": [1, 2]}])
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_plain_bodies_take_the_fast_path(document, separators):
    body = json.dumps(document, separators=separators).encode()
    assert read_plain_features(body, n_features=2) is not None
    assert read_plain_features(body.replace(b"1", b"true", 1), n_features=2) is None


def reference_answer(probabilities, predicted, *, class_names, model) -> dict:
    """The answer format_predictions must write, built the plain way."""
    return {"predictions": [{"label": class_names[i], "class_index": i,
                             "probabilities": dict(zip(class_names, row))}
                            for i, row in zip(predicted.tolist(), probabilities.tolist())],
            "model": model}


@pytest.mark.parametrize("class_names", [["a", "b"], ["setosa", "versicolor", "virginica"],
                                         ['say "hi"', "naïve", "back\\slash", "tab\t", "%d"]])
def test_format_predictions_writes_exact_probabilities(class_names):
    rng = np.random.default_rng(len(class_names))
    probabilities = rng.dirichlet(np.full(len(class_names), 0.3), size=257)
    probabilities[0] = np.eye(len(class_names))[-1]  # exact 0s and 1s as well
    predicted = probabilities.argmax(axis=1)
    model = {"name": "M", "version": "7"}
    body = format_predictions(probabilities, predicted, class_names=class_names, model=model)
    assert json.loads(body) == reference_answer(probabilities, predicted, class_names=class_names, model=model)


def test_format_predictions_keeps_order_and_names():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    body = json.loads(format_predictions(probabilities, probabilities.argmax(axis=1), class_names=["a", "b"],
                                         model={"name": "M", "version": "1"}))
    assert [p["label"] for p in body["predictions"]] == ["a", "b"]
    assert [p["class_index"] for p in body["predictions"]] == [0, 1]
    assert body["predictions"][1]["probabilities"] == {"a": 0.2, "b": 0.8}
    assert body["model"] == {"name": "M", "version": "1"}
