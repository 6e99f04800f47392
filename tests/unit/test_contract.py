"""Request parsing: every bad body becomes a RequestError with a 4xx and a sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.contract import RequestError, format_predictions, parse_features

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


def test_format_predictions_keeps_order_and_names():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    body = json.loads(format_predictions(probabilities, probabilities.argmax(axis=1), class_names=["a", "b"],
                                         model={"name": "M", "version": "1"}))
    assert [p["label"] for p in body["predictions"]] == ["a", "b"]
    assert [p["class_index"] for p in body["predictions"]] == [0, 1]
    assert body["predictions"][1]["probabilities"] == {"a": 0.2, "b": 0.8}
    assert body["model"] == {"name": "M", "version": "1"}
