"""data/make_accounts.py: the wide table of the bench is reproducible and as wide, textual and gappy as promised."""

from __future__ import annotations

import numpy as np
import pytest

from data.make_accounts import ID_COLUMN, TARGET, main, make_accounts
from training.data import load_table

pytestmark = pytest.mark.unit


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    paths = [tmp_path / name for name in ("a.csv", "b.csv", "c.csv")]
    for path, seed in zip(paths, (5, 5, 6)):
        assert main(["--rows", "500", "--seed", str(seed), "--output", str(path)]) == 0
    first, again, other = (path.read_bytes() for path in paths)
    assert first == again
    assert first != other
    assert first.count(b"\n") == 501  # the header and one line per row


def test_the_table_is_wide_mostly_text_with_gaps_of_both_kinds_and_both_labels(tmp_path):
    path = tmp_path / "accounts.csv"
    assert main(["--rows", "2000", "--output", str(path)]) == 0
    # As training reads it: the id left out, the target's values as the class names.
    dataset = load_table(path, target=TARGET, drop=[ID_COLUMN])
    numeric, text = dataset.numeric_features, dataset.categorical_features
    assert len(numeric) + len(text) >= 20
    assert 2 * len(text) >= len(numeric) + len(text)  # at least half of them text
    assert dataset.class_names == ["no", "yes"]
    assert np.bincount(dataset.y).min() > 100  # both labels, neither a handful
    frame = make_accounts(2000)
    assert frame[numeric].isna().any().any(), "no number is missing"
    assert frame[text].isna().any().any(), "no text value is missing"
    assert frame[ID_COLUMN].is_unique
