"""Tree ensembles compiled to C by treelite + tl2cgen (gcc), float64 thresholds: HistGradientBoosting's form."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.forms import RowByTable, RowSlices, Unsupported
from serving.forms.encoder import Encoder, encoder_and_classifier
from serving.schema import Table, TableSchema

LIBRARY_FILE = "classifier.so"
OPTIONS_FILE = "compiled.json"


@dataclass
class CompiledPredictor(RowByTable):
    """The encoder, then the compiled tree ensemble."""

    encoder: Encoder
    library: Path
    float32_features: bool
    n_classes: int
    threads: int = 1  # slices of a large input scored at once (RowSlices)
    form = "compiled"
    _predictor: object = field(init=False, repr=False)
    _slices: RowSlices = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import tl2cgen

        # One thread a call; more cores go to large inputs as slices of rows, as in the onnx form.
        self._predictor = tl2cgen.Predictor(str(self.library), nthread=1, verbose=False)
        self._slices = RowSlices(self.threads)

    def predict_proba(self, table: Table) -> np.ndarray:
        X = self.encoder.encode(table, float32=self.float32_features)
        out = self._slices.run(self._run, X)
        if out.shape[1] == 1 and self.n_classes == 2:  # binary boosting: P(class 1) only
            return np.hstack([1.0 - out, out])
        return out

    def _run(self, X: np.ndarray) -> np.ndarray:
        import tl2cgen

        out = self._predictor.predict(tl2cgen.DMatrix(X, dtype="float64"))
        return np.asarray(out, dtype=np.float64).reshape(len(X), -1)

    def save(self, directory: Path) -> None:
        self.encoder.save(directory)
        if self.library != directory / LIBRARY_FILE:
            shutil.copyfile(self.library, directory / LIBRARY_FILE)
        (directory / OPTIONS_FILE).write_text(json.dumps(
            {"float32_features": self.float32_features, "n_classes": self.n_classes}))


def load(directory: Path, schema: TableSchema, *, threads: int = 1) -> CompiledPredictor:
    options = json.loads((directory / OPTIONS_FILE).read_text())
    return CompiledPredictor(encoder=Encoder.load(directory), library=directory / LIBRARY_FILE,
                             float32_features=bool(options["float32_features"]),
                             n_classes=int(options["n_classes"]), threads=threads)


@contextlib.contextmanager
def native_output_to(path: Path) -> Iterator[None]:
    """Send what is written to file descriptors 1 and 2, native code's included, to path."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with path.open("wb") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with open(1, "w", closefd=False) as out, contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(out):
                yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def from_pipeline(pipeline, schema: TableSchema) -> CompiledPredictor:
    """Import the classifier into treelite and compile it; raises Unsupported when either fails."""
    from serving.forms.onnx import _compares_float32

    encoder, classifier = encoder_and_classifier(pipeline, schema)
    if shutil.which("gcc") is None:
        raise Unsupported("no C compiler (gcc) on this machine")
    try:
        import tl2cgen
        import treelite.sklearn

        model = treelite.sklearn.import_model(classifier)
        # The library lives in a folder of its own until save copies it into the model.
        library = Path(tempfile.mkdtemp(prefix="compiled-")) / LIBRARY_FILE
        # tl2cgen's bundled treelite says, from C++ and Python, that the model comes from a newer
        # treelite and how it splits the compilation: noise in the import's output, since the
        # compiled answers are checked against predict_proba like any form's.
        with native_output_to(library.with_name("compile.log")):
            tl2cgen.export_lib(model, toolchain="gcc", libpath=str(library),
                               params={"parallel_comp": 2}, nthread=2, verbose=False)
        return CompiledPredictor(encoder=encoder, library=library,
                                 float32_features=_compares_float32(classifier),
                                 n_classes=len(classifier.classes_))
    except Exception as error:  # noqa: BLE001 - treelite and the compiler fail in many ways
        raise Unsupported(f"treelite/tl2cgen cannot compile {type(classifier).__name__}: "
                          f"{str(error).strip().splitlines()[-1][:200]}") from None
