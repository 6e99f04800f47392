"""Proving a served form answers as the registered model does, before the import keeps it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from release import ImportFailed
from serving.forms import Unsupported, convert, load_predictor
from serving.layout import MLFLOW_MODEL_DIR
from serving.schema import Table, TableSchema

# A served form must give the registered model's labels and its probabilities to within this.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class FormCheck:
    """The chosen served form and the evidence that it answers like the registered model."""

    form: str
    rows: int
    max_abs_diff: float
    tried: dict[str, str]  # form -> why it was passed over, for every faster form

    def to_dict(self) -> dict:
        return {"form": self.form, "rows": self.rows, "max_abs_diff": self.max_abs_diff,
                "tolerance": TOLERANCE, "passed_over": self.tried}


def probe_rows(rows: dict, schema: TableSchema) -> Table:
    """The run's held-out rows, plus one row with every value missing and one of unseen text."""
    # The two extra rows reach paths the held-out rows may miss: imputing every column, unseen text.
    records = [dict(zip(rows["columns"], row)) for row in rows["data"]]
    records += [{}, {name: "\u2400 unseen" for name in schema.categorical}]
    numeric = [[np.nan if r.get(name) is None else r[name] for name in schema.numeric] for r in records]
    text = [[r.get(name) for name in schema.categorical] for r in records]
    return Table(numeric=np.array(numeric, dtype=np.float64).reshape(len(records), len(schema.numeric)),
                 categorical=np.array(text, dtype=object).reshape(len(records), len(schema.categorical)))


def choose_form(pipeline, schema: TableSchema, table: Table, *, directory: Path,
                forms: tuple[str, ...]) -> FormCheck:
    """Save the first form, in the order given, that reproduces the pipeline on the table's rows."""
    expected = np.asarray(pipeline.predict_proba(table.to_frame(schema)), dtype=np.float64)
    tried: dict[str, str] = {}
    for form in forms:
        try:
            candidate = convert(form, pipeline, schema)
        except Unsupported as error:
            tried[form] = f"unsupported: {error}"
            continue
        # Judge the form as the service will read it: saved, then loaded back from the files.
        trial = directory / f".form-{form}"
        trial.mkdir()
        shutil.copytree(directory / MLFLOW_MODEL_DIR, trial / MLFLOW_MODEL_DIR)
        candidate.save(trial)
        answered = load_predictor(form, trial, schema).predict_proba(table)
        diff = float(np.max(np.abs(answered - expected))) if answered.shape == expected.shape else float("inf")
        same_labels = answered.shape == expected.shape and \
            np.array_equal(answered.argmax(axis=1), expected.argmax(axis=1))
        shutil.rmtree(trial)
        if same_labels and diff <= TOLERANCE:
            candidate.save(directory)
            return FormCheck(form=form, rows=len(table), max_abs_diff=diff, tried=tried)
        tried[form] = f"differs from the model: largest difference {diff:.3g}, labels {'equal' if same_labels else 'differ'}"
    raise ImportFailed(f"no served form reproduces the model ({'; '.join(f'{k}: {v}' for k, v in tried.items())})")
