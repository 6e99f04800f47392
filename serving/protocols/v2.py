"""The Open Inference Protocol V2 (KServe, MLServer, Triton) over REST: health, metadata, infer; refusals `{"error"}`."""

# Answers are always JSON, which clients read whether or not they asked for binary outputs.

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from serving.core import Scorer
from serving.errors import RequestError
from serving.openapi import Schemas, answer, body
from serving.protocols import Adapter
from serving.protocols.native import REFUSALS, refusals
from serving.protocols.v2_tensors import INPUT_NAME, OUTPUT_NAMES, TEXT_DATATYPE, InferRequest, parse_infer
from serving.schema import TableSchema

SERVER_NAME = "classification_service"
TAG = {"name": "Open Inference Protocol V2",
       "description": "KServe's, MLServer's and Triton's REST protocol: tensors in, tensors out."}
_HEADER_LENGTH = b"inference-header-content-length"
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string"}, "data": {"type": "array", "items": {}},
    "parameters": {"anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}]}}}
_INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "inputs": {"type": "array", "items": _TENSOR},
    "outputs": {"anyOf": [{"type": "array", "items": {"type": "object", "additionalProperties": True}},
                          {"type": "null"}]},
    "parameters": {"anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}]}}}
_DOCUMENTED = {**{status: REFUSALS[status] for status in (401, 405, 408, 413, 503)},
               400: "a bad tensor: wrong name, shape, datatype or data", 404: "another model name or version"}


def server_metadata(*, version: str) -> dict:
    """The answer to GET /v2."""
    return {"name": SERVER_NAME, "version": version, "extensions": []}


def model_metadata(*, schema: TableSchema, name: str, version: str, platform: str) -> dict:
    """The answer to GET /v2/models/{name}[/versions/{v}]: the input and output tensors."""
    if schema.all_numeric:
        inputs = [{"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, len(schema.features)]}]
    else:
        inputs = [{"name": feature.name, "datatype": "FP64" if feature.name in schema.numeric else TEXT_DATATYPE,
                   "shape": [-1]} for feature in schema.features]
    outputs = [{"name": "label", "datatype": TEXT_DATATYPE, "shape": [-1]},
               {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(schema.class_names)]},
               {"name": "class_index", "datatype": "INT64", "shape": [-1]}]
    return {"name": name, "versions": [version], "platform": platform, "inputs": inputs, "outputs": outputs}


def check_model(name: str | None, version: str | None, *, served_name: str, served_version: str) -> None:
    """Refuse (404) a path naming another model, or another version of this one."""
    if name is not None and name != served_name:
        raise RequestError(404, f"model {name!r} is not served here; this server serves {served_name!r}",
                           "unknown_model")
    if version is not None and version != served_version:
        raise RequestError(404, f"model {served_name!r} has no version {version!r} here; "
                                f"this server serves version {served_version!r}", "unknown_model")


def format_infer(probabilities: np.ndarray, predicted: np.ndarray, *, schema: TableSchema, name: str,
                 version: str, request: InferRequest) -> bytes:
    """The JSON answer: the outputs asked for (all by default), flat, the same doubles as /predict's."""
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float64)
    rows, n_classes = probabilities.shape
    index = predicted
    outputs = []
    for output in request.outputs or OUTPUT_NAMES:
        if output == "label":
            labels = np.asarray(schema.class_names, dtype=object)[index].tolist()
            outputs.append({"name": "label", "datatype": TEXT_DATATYPE, "shape": [rows], "data": labels})
        elif output == "probabilities":
            outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [rows, n_classes],
                            "data": probabilities.ravel()})
        else:
            outputs.append({"name": "class_index", "datatype": "INT64", "shape": [rows],
                            "data": index.astype(np.int64)})
    answer: dict = {"model_name": name, "model_version": version}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = outputs
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


class V2Protocol(Adapter):
    """/v2, /v2/health/{live,ready}, /v2/models/{name}[/versions/{version}][/ready|/infer]."""

    tag = TAG

    def live(self, call: Any) -> tuple[int, bytes]:
        return 200, b'{"live":true}'

    def ready(self, call: Any) -> tuple[int, bytes]:
        return (200, b'{"ready":true}') if self.scorer else (503, b'{"ready":false}')

    def server(self, call: Any) -> tuple[int, bytes]:
        version = self.scorer.model.summary["version"] if self.scorer else ""
        return 200, json.dumps(server_metadata(version=version)).encode()

    def model(self, call: Any) -> tuple[int, bytes]:
        model = self._named(call.params).model
        return 200, json.dumps(model_metadata(
            schema=model.schema, name=model.summary["name"], version=model.summary["version"],
            platform=f"sklearn-{model.predictor.form}")).encode()

    def model_ready(self, call: Any) -> tuple[int, bytes]:
        self._named(call.params)
        return 200, json.dumps({"name": call.params["name"], "ready": True}).encode()

    def infer(self, call: Any) -> tuple[int, bytes]:
        scorer = self._named(call.params)
        model = scorer.model
        header_length = next((value for key, value in call.headers if key == _HEADER_LENGTH), None)
        request = parse_infer(call.body, schema=model.schema, max_rows=scorer.limits.max_rows,
                              header_length=int(header_length) if header_length and header_length.isdigit() else None)
        probabilities, predicted = scorer.score(request.table)
        return 200, format_infer(probabilities, predicted, schema=model.schema, name=model.summary["name"],
                                 version=model.summary["version"], request=request)

    def not_found(self, call: Any) -> tuple[int, bytes]:
        raise RequestError(404, f"no such endpoint {call.path}", "not_found")

    def _named(self, params: dict) -> Scorer:
        """The scorer, once the model named in the path is the one served (404 otherwise)."""
        summary = self.loaded().model.summary
        check_model(params["name"], params.get("version"), served_name=summary["name"],
                    served_version=summary["version"])
        return self.scorer

    def describe(self, handler: str, schemas: Schemas) -> dict:
        """The OpenAPI request body and answers of one handler."""
        flags = {"type": "object", "additionalProperties": {"type": "boolean"}}
        if handler in ("live", "ready"):
            return {"responses": {"200": answer(f"{handler}", flags),
                                  **({"503": answer("not ready")} if handler == "ready" else {})}}
        metadata = {"type": "object", "additionalProperties": True}
        documented = refusals(schemas, _DOCUMENTED)
        if handler == "infer":
            return {"requestBody": body(_INFER_REQUEST),
                    "responses": {"200": answer("label, probabilities and class_index tensors", metadata),
                                  **documented}}
        return {"responses": {"200": answer("the model's input and output tensors", metadata), **documented}}
