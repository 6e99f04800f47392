"""The page at / and its OpenAPI document (/docs.json): BentoML's, plus each route of the table."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from serving.model import LoadedModel
from serving.protocols import Adapter
from serving.schema import NUMBER

REF = "#/components/schemas/{model}"
# BentoML's Swagger UI page, with this service's title (BentoML's CSS hides it, to show only its
# own badge) and without BentoML's analytics and GitHub links; the assets are BentoML's own
# (/static_content), and it reads ./docs.json.
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>%s</title>
<link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css">
<link rel="stylesheet" type="text/css" href="./static_content/index.css">
<style>.info .main .title { visibility: visible; }</style></head>
<body><div id="swagger-ui"></div>
<script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script src="./static_content/swagger-initializer.js" charset="UTF-8"></script></body></html>
"""


class Schemas:
    """The components/schemas of the document, filled as pydantic models are referred to."""

    def __init__(self) -> None:
        self.found: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict:
        """A $ref to model's JSON schema, which (with the models it uses) joins the components."""
        schema = model.model_json_schema(ref_template=REF)
        self.found.update(schema.pop("$defs", {}))
        self.found[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}


def answer(description: str, schema: dict | None = None, media_type: str = "application/json") -> dict:
    """One documented answer: its description and, when it has a JSON body, that body's schema."""
    return {"description": description, "content": {media_type: {"schema": schema}}} if schema else \
        {"description": description}


def body(schema: dict, *, media_types: tuple[str, ...] = ("application/json",)) -> dict:
    """A required request body of this schema, for each media type."""
    return {"required": True, "content": {media_type: {"schema": schema} for media_type in media_types}}


def introduction(model: LoadedModel | None) -> tuple[str, str]:
    """The page's title and the few lines a newcomer reads first: what is served, how to call it."""
    if model is None:
        return "classification_service", "No model is loaded yet."
    summary, info = model.summary, model.info
    stats = model.feature_stats
    middle = {name: round(float(low + high) / 2, 2) for name, low, high in zip(stats.names, stats.low, stats.high)} \
        if stats else {}
    example = {f.name: middle.get(f.name, 0.0) if f.type == NUMBER else next(iter(f.categories), None)
               for f in model.schema.features}
    records = json.dumps({"records": [example]})
    title = f"classification_service: {summary['name']} version {summary['version']}"
    description = "\n".join([
        f"Serves **{summary['name']}** version **{summary['version']}** of the MLflow registry "
        f"(run `{info['run_id']}`, dataset `{info['dataset']}`, served form `{info['served_form']}`), "
        f"imported as BentoML model `{info['bento_tag']}`. Classes: {', '.join(model.class_names)}.",
        "",
        "Score rows with `POST /predict` (labels and probabilities), in this service's own format:",
        "",
        f"    curl -s -X POST localhost:3000/predict -H 'Content-Type: application/json' -d '{records}'",
        "",
        "The same model answers MLflow's scoring protocol (`POST /invocations`, for `mlflow models "
        "serve` clients) and the Open Inference Protocol V2 (`/v2/...`, for KServe, MLServer and "
        "Triton clients). `GET /metadata` tells the model's lineage; `/metrics` is Prometheus'.",
    ])
    return title, description


def build_document(base: dict, operations: list[tuple[str, str, dict]], *, tags: list[dict],
                   schemas: Schemas, model: LoadedModel | None) -> dict:
    """BentoML's document (versioned by service.py) with our (path, method, operation)s, tags and schemas."""
    title, description = introduction(model)
    info = {**base.get("info", {}), "title": title, "description": description}
    ours: dict[str, dict] = {}
    for path, method, operation in operations:
        ours.setdefault(path, {})[method] = operation
    # Ours replace BentoML's entry of /predict (its API), which lists no refusals and no columns.
    infrastructure = [tag for tag in base.get("tags", []) if tag.get("name") == "Infrastructure"]
    components = base.get("components", {})
    return {**base, "info": info, "tags": tags + infrastructure, "paths": {**base.get("paths", {}), **ours},
            "components": {**components, "schemas": {**components.get("schemas", {}), **schemas.found}}}


class OpenApiDocument(Adapter):
    """GET / and GET /docs.json, as an adapter of the route table; the document built once per model."""

    def __init__(self, routes: Any, adapters: dict[str, Any]) -> None:
        super().__init__()
        self.routes, self.adapters = routes, adapters
        self.base: Callable[[], dict] = lambda: {"openapi": "3.0.2", "info": {"version": "none"}, "paths": {}}
        self._answer = b""

    def bind(self, scorer: Any) -> None:
        self.scorer, self._answer = scorer, b""

    @property
    def model(self) -> LoadedModel | None:
        return self.scorer.model if self.scorer else None

    def index(self, call: Any) -> tuple[int, bytes]:
        """GET /: Swagger UI over the document, titled with the served model."""
        return 200, (PAGE % html.escape(introduction(self.model)[0])).encode()

    def document(self, call: Any) -> tuple[int, bytes]:
        """The document, as JSON."""
        if not self._answer:
            self._answer = json.dumps(self.build()).encode()
        return 200, self._answer

    def build(self) -> dict:
        """BentoML's document, plus each documented route as its adapter describes it."""
        schemas, operations = Schemas(), []
        name = self.model.summary["name"] if self.model else "{name}"
        for route in self.routes.routes:
            if not route.summary:
                continue
            adapter = self.adapters[route.protocol]
            operation = {"tags": [adapter.tag["name"]], "summary": route.summary,
                         "operationId": f"{route.protocol}_{route.handler}", **adapter.describe(route.handler, schemas)}
            for media_type in (route.media_types or ())[1:]:  # /invocations: CSV too
                operation["requestBody"]["content"][media_type.decode()] = {"schema": {"type": "string"}}
            operations.append((route.label.replace("{name}", name), route.methods[0].lower(), operation))
        tags = [adapter.tag for key, adapter in self.adapters.items() if key != "docs"]
        return build_document(self.base(), operations, tags=tags, schemas=schemas, model=self.model)
