"""A scored file holds, for every row, the label and probabilities a real `bentoml serve` answers on /predict.

The linear form's matrix product (BLAS) adds a row's terms in an order that depends on how many
rows are multiplied at once: /predict itself may answer a row differently in the last bits
depending on the other rows of its request. Requests here hold exactly the rows of one chunk,
and then every probability is the same double.
"""

from __future__ import annotations

import math

import httpx
import pyarrow.parquet as pq
import pytest

from batch.score import main as score_main
from tests.batch_support import import_wide_model, write_accounts
from tests.conftest import use_bentoml_home
from tests.e2e.conftest import start_server
from tests.servers import stop_process_group

pytestmark = pytest.mark.e2e

ROWS = 1_500
REQUEST_ROWS = 250  # = --chunk-rows, and a divisor of the row groups' 500


@pytest.fixture(scope="module")
def served_wide(tmp_path_factory):
    """The wide table's model imported here and served by `bentoml serve`; its home and URL."""
    home = import_wide_model(tmp_path_factory.mktemp("batch-served"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_bentoml_home(monkeypatch, home)
        server = start_server(home=home)
    yield home, server.url
    stop_process_group(server.process)


def records_of(frame, names: list[str]) -> list[dict]:
    """Rows as /predict takes them: numbers, text, and null for a missing value."""
    columns = frame[names]
    return columns.astype(object).where(columns.notna(), None).to_dict("records")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_every_row_of_the_file_is_scored_as_predict_answers(served_wide, tmp_path, monkeypatch, suffix):
    home, url = served_wide
    use_bentoml_home(monkeypatch, home)
    source = tmp_path / f"accounts{suffix}"
    frame = write_accounts(source, rows=ROWS, seed=21)
    assert score_main(["--input", str(source), "--output", str(tmp_path / "scored.parquet"),
                       "--keep", "account_id", "--chunk-rows", str(REQUEST_ROWS)]) == 0
    scored = pq.read_table(tmp_path / "scored.parquet").to_pylist()
    health = httpx.get(f"{url}/health", timeout=30).json()
    names, classes = health["model"]["features"], health["model"]["classes"]
    answers = []
    for start in range(0, ROWS, REQUEST_ROWS):
        response = httpx.post(f"{url}/predict", json={"records": records_of(frame[start:start + REQUEST_ROWS], names)},
                              timeout=60)
        assert response.status_code == 200, response.text
        answers += response.json()["predictions"]
    assert len(scored) == len(answers) == ROWS
    for row, answer, account in zip(scored, answers, frame["account_id"], strict=True):
        assert row["account_id"] == account
        assert row["label"] == answer["label"]
        for name in classes:  # the same float64, to the bit (JSON carries it exactly)
            assert row[f"probability_{name}"] == answer["probabilities"][name]
            assert math.isfinite(row[f"probability_{name}"])
