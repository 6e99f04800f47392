"""A minimal hand-written FastAPI + uvicorn server: the bench's baseline, not part of the product.

    MLFLOW_TRACKING_URI=... python -m bench.fastapi_baseline --port 8000

It loads the registry's production model once, keeps only its fitted numbers (in the service's
own linear form, serving.forms.linear), and answers POST /predict with the same JSON as the
BentoML service (GET /health once loaded). Same maths, same answer: the bench then compares what
each serving stack costs, not the model. Linear models only: a production model that is not
preprocessing + LogisticRegression on all-numeric columns is refused at start.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from serving.forms.linear import LinearPredictor, from_pipeline
from serving.schema import Table, TableSchema
from training.cli import configure_logging as configure_cli_logging

logger = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    features: list[list[float]]


@dataclass(frozen=True)
class LinearModel:
    """The production pipeline's fitted numbers, and the names the answer uses."""

    predictor: LinearPredictor  # the service's own numpy maths: same model, same answers
    class_names: list[str]
    n_features: int
    summary: dict[str, str]


def load_production(name: str, alias: str) -> LinearModel:
    """Fetch name@alias from the MLflow registry and keep its fitted parameters."""
    import mlflow

    version = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    pipeline = mlflow.sklearn.load_model(f"models:/{name}@{alias}")
    schema = TableSchema.from_dict(mlflow.artifacts.load_dict(f"runs:/{version.run_id}/schema.json"))
    if not schema.all_numeric:
        raise SystemExit(f"{name}@{alias} takes text columns: the baseline takes numbers only")
    # Raises serving.forms.Unsupported for anything but preprocessing + LogisticRegression.
    return LinearModel(predictor=from_pipeline(pipeline, schema),
                       class_names=list(schema.class_names), n_features=len(schema.feature_names),
                       summary={"name": name, "version": str(version.version)})


def create_app(model: LinearModel) -> FastAPI:
    """The two routes, answering from model."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    n_features = model.n_features

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model.summary}

    @app.post("/predict")
    async def predict(request: PredictRequest) -> JSONResponse:
        X = np.asarray(request.features, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != n_features:
            raise HTTPException(422, f"send rows of {n_features} features")
        probabilities = model.predictor.predict_proba(Table.from_numbers(X))
        predictions = [
            {"label": model.class_names[index], "class_index": index,
             "probabilities": dict(zip(model.class_names, row))}
            for index, row in zip(probabilities.argmax(axis=1).tolist(), probabilities.tolist())
        ]
        # JSONResponse directly: the answer is plain JSON already, no jsonable_encoder walk.
        return JSONResponse({"predictions": predictions, "model": model.summary})

    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fastapi_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="ClassificationModel", help="registered model name")
    parser.add_argument("--alias", default="production")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the model, then serve until stopped."""
    args = parse_args(argv)
    configure_cli_logging()
    model = load_production(args.model, args.alias)
    logger.info("serving %s version %s", model.summary["name"], model.summary["version"])
    # The fastest settings uvicorn offers for one process: uvloop, httptools, no access log.
    uvicorn.run(create_app(model), host=args.host, port=args.port, workers=1, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
