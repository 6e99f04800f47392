"""The classifier run by onnxruntime (skl2onnx) after the numpy encoder; tree rows rounded to float32 as sklearn."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.errors import one_line
from serving.forms import RowByTable, RowSlices, Unsupported
from serving.forms.encoder import Encoder, encoder_and_classifier
from serving.schema import Table, TableSchema

MODEL_FILE = "classifier.onnx"
OPTIONS_FILE = "onnx.json"


@dataclass
class OnnxPredictor(RowByTable):
    """The encoder, then an onnxruntime session of the classifier."""

    encoder: Encoder
    model: bytes = field(repr=False)
    float32_features: bool
    threads: int = 1
    form = "onnx"

    def __post_init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread a call: onnxruntime's own pool would split even a one-row call across trees.
        # More cores go to large inputs as slices of rows (RowSlices), each a call of its own.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._slices = RowSlices(self.threads)

    def predict_proba(self, table: Table) -> np.ndarray:
        X = self.encoder.encode(table, float32=self.float32_features)
        return self._slices.run(self._run, X)

    def _run(self, X: np.ndarray) -> np.ndarray:
        return self._session.run(["probabilities"], {self._input: X})[0].astype(np.float64)

    def save(self, directory: Path) -> None:
        self.encoder.save(directory)
        (directory / MODEL_FILE).write_bytes(self.model)
        (directory / OPTIONS_FILE).write_text(json.dumps({"float32_features": self.float32_features}))


def load(directory: Path, schema: TableSchema, *, threads: int = 1) -> OnnxPredictor:
    options = json.loads((directory / OPTIONS_FILE).read_text())
    return OnnxPredictor(encoder=Encoder.load(directory), model=(directory / MODEL_FILE).read_bytes(),
                         float32_features=bool(options["float32_features"]), threads=threads)


def from_pipeline(pipeline, schema: TableSchema) -> OnnxPredictor:
    """Convert the classifier with skl2onnx; raises Unsupported when it cannot."""

    encoder, classifier = encoder_and_classifier(pipeline, schema)
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import DoubleTensorType

        model = to_onnx(classifier, initial_types=[("X", DoubleTensorType([None, encoder.n_outputs]))],
                        options={id(classifier): {"zipmap": False}})
        predictor = OnnxPredictor(encoder=encoder, model=model.SerializeToString(),
                                  float32_features=_compares_float32(classifier))
    except Exception as error:  # noqa: BLE001 - skl2onnx and onnxruntime raise many kinds
        raise Unsupported(f"skl2onnx cannot convert {type(classifier).__name__}: "
                          f"{one_line(error)[:200]}") from None
    return predictor


def _compares_float32(classifier) -> bool:
    """True for sklearn's tree models, which cast their input to float32 before each split."""
    from sklearn.ensemble._forest import BaseForest
    from sklearn.tree import BaseDecisionTree

    return isinstance(classifier, (BaseForest, BaseDecisionTree))
