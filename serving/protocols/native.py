"""This service's own protocol: POST /predict (labels and probabilities), GET /health, GET /metadata."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from serving.core import MAX_ABS_FEATURE, Scorer
from serving.openapi import Schemas, answer, body
from serving.protocols import Adapter
from serving.protocols.native_codec import AnswerWriter, PredictRequestReader, table_from_values
from serving.schema import NUMBER, Row, TableSchema

TAG = {"name": "Predict", "description": "This service's own protocol: labels and probabilities by class name."}


class Prediction(BaseModel):
    label: str
    class_index: int
    probabilities: dict[str, float]


class ModelSummary(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelSummary


class InputColumn(BaseModel):
    name: str
    type: str
    categories: list[str] | None = None


class ShadowInfo(BaseModel):
    bento_tag: str
    status: str  # "scoring", or "not scoring" with the reason in error
    error: str | None = None
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    served_form: str | None = None
    metrics: dict[str, float] | None = None
    queue_size: int | None = None


class ModelInfo(BaseModel):
    name: str
    version: str
    run_id: str
    alias: str | None = None
    dataset: str
    features: list[str]
    inputs: list[InputColumn]
    classes: list[str]
    metrics: dict[str, float]
    served_form: str
    form_check: dict[str, Any]
    bento_tag: str
    imported_at: str | None = None
    run_url: str | None = None
    sha256: dict[str, str]
    threads: int = 1  # the model's threads for a request of 256 rows or more (MODEL_THREADS)
    shadow: ShadowInfo | None = None  # the challenger (SHADOW_MODEL_TAG), if any


class HealthResponse(BaseModel):
    status: str
    model: ModelInfo | None = None


class ErrorResponse(BaseModel):
    error: str


REFUSALS = {400: "malformed body", 401: "missing or wrong API key", 405: "wrong method",
            408: "the body did not arrive within the request timeout", 413: "body over the size limit",
            415: "content type is not application/json",
            422: "rows of the wrong length, missing or unknown columns, too many rows, or values of the wrong type",
            503: "model not loaded"}


def refusals(schemas: Schemas, descriptions: dict[int, str]) -> dict[str, dict]:
    """The documented refusals: each status with its description and the `{"error": ...}` body."""
    error = schemas.ref(ErrorResponse)
    return {str(status): answer(text, error) for status, text in descriptions.items()}


def request_schema(schema: TableSchema | None, *, max_rows: int) -> dict:
    """The /predict body: rows of numbers (all-numeric models) or records by column name."""
    number = {"type": "number", "minimum": -MAX_ABS_FEATURE, "maximum": MAX_ABS_FEATURE}
    if schema is None:
        record = {"type": "object", "additionalProperties": {"anyOf": [number, {"type": "string"}, {"type": "null"}]}}
    else:
        record = {"type": "object", "additionalProperties": False, "required": schema.feature_names,
                  "properties": {f.name: {"anyOf": [number if f.type == NUMBER else {"type": "string"},
                                                    {"type": "null"}]} for f in schema.features}}
    records = {"type": "object", "additionalProperties": False, "required": ["records"], "properties": {
        "records": {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}}}
    if schema is not None and not schema.all_numeric:
        return records
    width = {"minItems": len(schema.features), "maxItems": len(schema.features)} if schema else {"minItems": 1}
    row = {"type": "array", "items": number, **width}
    features = {"type": "object", "additionalProperties": False, "required": ["features"], "properties": {
        "features": {"anyOf": [{"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}, row]}}}
    return {"anyOf": [features, records]}


class NativeProtocol(Adapter):
    """POST /predict, GET /health and GET /metadata over the scoring core."""

    tag = TAG

    def __init__(self) -> None:
        super().__init__()
        self.reader: PredictRequestReader | None = None
        self.writer: AnswerWriter | None = None
        self._health = self._metadata = b""

    def bind(self, scorer: Scorer) -> None:
        """Answer for this model from now on: its reader and writer are made once, here."""
        model = scorer.model
        self.reader = PredictRequestReader(schema=model.schema, max_rows=scorer.limits.max_rows)
        self.writer = AnswerWriter(class_names=model.class_names, model=model.summary)
        info = {**model.info, "shadow": scorer.shadow.describe() if scorer.shadow is not None else None}
        self._health = json.dumps({"status": "ok", "model": info}).encode()
        self._metadata = json.dumps(info).encode()
        self.scorer = scorer

    def predict(self, call: Any) -> tuple[int, bytes]:
        """POST /predict: one prediction per row, in order."""
        rows = self.reader.read_row_or_table(call.body)
        if type(rows) is Row:  # one row, the usual request
            probabilities, predicted = self.scorer.score_row(rows)
            return 200, self.writer.write_row(probabilities, predicted)
        probabilities, predicted = self.scorer.score(rows)
        return 200, self.writer.write(probabilities, predicted)

    def check(self, call: Any) -> None:
        """POST /predict's checks alone, for FAST_PATH=false, where BentoML's stack then answers."""
        self.reader.read(call.body)

    def health(self, call: Any) -> tuple[int, bytes]:
        """GET /health: which version is loaded and how it scored; 503 before a model is."""
        if self.scorer is None:
            return 503, b'{"status": "unavailable", "model": null}'
        return 200, self._health

    def metadata(self, call: Any) -> tuple[int, bytes]:
        """GET /metadata: the served model's lineage."""
        self.loaded()
        return 200, self._metadata

    def predict_values(self, *, features: Any = None, records: Any = None) -> PredictResponse:
        """The declared `predict` API: POST /predict's checks and answer, from decoded values."""
        scorer = self.loaded()
        model = scorer.model
        table = table_from_values(features=features, records=records, schema=model.schema,
                                  max_rows=scorer.limits.max_rows)
        probabilities, predicted = scorer.score(table)
        names = model.class_names
        return PredictResponse(model=ModelSummary(**model.summary), predictions=[
            Prediction(label=names[index], class_index=index, probabilities=dict(zip(names, row)))
            for index, row in zip(predicted.tolist(), probabilities.tolist())])

    def describe(self, handler: str, schemas: Schemas) -> dict:
        """The OpenAPI request body and answers of one handler."""
        model = self.scorer.model if self.scorer else None
        if handler == "predict":
            max_rows = self.scorer.limits.max_rows if self.scorer else 10_000
            return {"requestBody": body(request_schema(model.schema if model else None, max_rows=max_rows)),
                    "responses": {"200": answer("one prediction per row", schemas.ref(PredictResponse)),
                                  **refusals(schemas, REFUSALS)}}
        if handler == "health":
            health = schemas.ref(HealthResponse)
            return {"responses": {"200": answer("the model is loaded", health),
                                  "503": answer("the model is not loaded yet", health)}}
        return {"responses": {"200": answer("the served model's lineage", schemas.ref(ModelInfo)),
                              **refusals(schemas, {503: REFUSALS[503]})}}
