"""batch.tables: a chunk of any Arrow types as the model's Table, refused rows as /predict refuses them."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.tables import (
    chunk_to_table,
    input_schema,
    open_input,
    output_schema,
    output_table,
    read_chunks,
)
from serving.schema import CATEGORY, NUMBER, Feature, TableSchema

pytestmark = pytest.mark.unit

SCHEMA = TableSchema(features=(Feature("x", NUMBER), Feature("y", NUMBER), Feature("c", CATEGORY, ("a", "b"))),
                     class_names=("no", "yes"))


def test_numbers_of_any_numeric_type_and_text_of_any_string_type():
    chunk = pa.table({
        "x": pa.array([1, None, 3], pa.int32()),
        "y": pa.array([1.5, float("nan"), None], pa.float32()),
        "c": pa.array(["a", None, "zz"]).dictionary_encode(),
    })
    part = chunk_to_table(chunk, SCHEMA)
    assert len(part.refused) == 0 and part.scored.tolist() == [0, 1, 2]
    assert part.table.numeric[:, 0].tolist()[::2] == [1.0, 3.0] and math.isnan(part.table.numeric[1, 0])
    assert part.table.numeric[0, 1] == 1.5 and np.isnan(part.table.numeric[1:, 1]).all()
    assert part.table.categorical[:, 0].tolist() == ["a", None, "zz"]


def test_text_cells_of_a_csv_are_read_as_numbers_or_refused():
    chunk = pa.table({"x": pa.array(["1", "-2.5e3", None, "abc", " 4", "inf"]),
                      "y": pa.array(["1"] * 6), "c": pa.array(["a"] * 6, pa.large_string())})
    assert chunk_to_table(chunk, SCHEMA).refused.tolist() == [0, 1, 2, 3, 4, 5]  # typed text is not a number
    part = chunk_to_table(chunk, SCHEMA, parse_text=True)
    assert part.refused.tolist() == [3, 4, 5]
    assert part.columns.tolist() == ["x", "x", "x"]
    assert part.reasons.tolist()[:2] == ["not a number", "not a number"]
    assert part.reasons[2].startswith("outside the accepted range")
    assert part.scored.tolist() == [0, 1, 2]
    assert part.table.numeric[:2, 0].tolist() == [1.0, -2500.0] and math.isnan(part.table.numeric[2, 0])


def test_a_row_is_refused_for_its_first_bad_column_and_wrong_types_are_refused():
    chunk = pa.table({"x": pa.array([1e101, 1.0, 2.0]), "y": pa.array([True, None, False]),
                      "c": pa.array([1, 2, None], pa.int64())})
    part = chunk_to_table(chunk, SCHEMA)
    assert part.refused.tolist() == [0, 1, 2]
    assert part.columns.tolist() == ["x", "c", "y"]
    assert part.reasons.tolist()[1:] == ["not text", "not a number"]
    assert len(part.table) == 0


def test_csv_chunks_are_rows_not_bytes_and_the_output_has_labels_and_probabilities(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,x,y,c\n" + "".join(f"r{i},{i},NA,a\n" for i in range(25)))
    source = open_input(path)
    chunks = list(read_chunks(source, columns=["id", "x", "y", "c"], chunk_rows=10))
    assert [c.num_rows for c in chunks] == [10, 10, 5]
    schema = output_schema(input_schema(source, ["id", "x", "y", "c"]), ["id"], ["no", "yes"])
    part = chunk_to_table(chunks[2], SCHEMA, parse_text=True)
    table = output_table(chunks[2], part.scored, np.array([[0.25, 0.75]] * 5), np.ones(5, dtype=np.int64),
                         keep=["id"], schema=schema)
    assert table.to_pylist()[0] == {"id": "r20", "label": "yes", "probability_no": 0.25, "probability_yes": 0.75}


def test_parquet_chunks_stay_within_row_groups(tmp_path):
    pq.write_table(pa.table({"x": list(range(25))}), tmp_path / "in.parquet", row_group_size=10)
    source = open_input(tmp_path / "in.parquet")
    assert source.row_groups == (10, 10, 5)
    assert [c.num_rows for c in read_chunks(source, columns=["x"], chunk_rows=4)] == [4, 4, 2, 4, 4, 2, 4, 1]
    assert [c.num_rows for c in read_chunks(source, columns=["x"], chunk_rows=4, row_groups=[1])] == [4, 4, 2]
