"""The BentoML service (`bentoml serve`): the imported model, `predict` as a BentoML API, our route table in front."""

# `predict` is a real @bentoml.api, for BentoML's clients and in-process calls. Over HTTP the route
# table's paths (serving/routes.py) are answered ahead of BentoML's middleware, by the same scoring
# core (the fast path; FAST_PATH=false turns it off: README "Performance").

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Annotated

import attrs
import bentoml
from pydantic import Field

from serving.core import Limits
from serving.forms import PARALLEL_ROWS
from serving.http import JsonErrors, ServingApp, in_front_of
from serving.logs import configure_logging
from serving.model import load_model
from serving.monitoring import ServiceMetrics
from serving.protocols.native import PredictResponse
from serving.settings import InvalidSettings, get_settings, model_threads
from serving.shadow import load_shadow

logger = logging.getLogger(__name__)

# At import, because that is the first moment our code runs: `bentoml serve` imports this module in
# its own process and in each worker right after setting up BentoML's logging, before either logs
# a line of its own. LOG_FORMAT=json: every line after this one is a JSON object.
try:
    configure_logging(get_settings().log_format)
except InvalidSettings as error:  # e.g. LOG_FORMAT=xml or MAX_ROWS=abc: one line, not a traceback
    raise SystemExit(f"error: {error}") from None

http_app = ServingApp()

# One worker per core is the most that helps; see README "Performance". Each worker's model takes
# a share of the cores for large requests (MODEL_THREADS, serving/settings.py).
WORKERS = 1

Row = list[float]
Record = dict[str, float | str | None]


class FastPathService(bentoml.Service):
    """A BentoML service whose own routes are answered before BentoML's middleware stack."""

    def to_asgi(self, is_main: bool = True):
        return in_front_of(super().to_asgi(is_main), http_app, document=lambda: self.openapi_spec.asdict())

    @property
    def openapi_spec(self):
        """BentoML's OpenAPI document, versioned by the model it serves (/docs.json adds our routes)."""
        spec = super().openapi_spec
        # BentoML takes info.version from a built Bento and writes "None" under `bentoml serve`;
        # the model's tag says what a client talks to in both cases. Contact is dropped: it names
        # BentoML's own team, who are not whom to ask about this service.
        version = str(bentoml.models.get(get_settings().bento_model_tag).tag.version)
        return attrs.evolve(spec, info=attrs.evolve(spec.info, version=version, contact=None))


@bentoml.service(
    name="classification_service",
    service_class=FastPathService,
    workers=WORKERS,
    logging={"access": {"enabled": False}},
    tracing={"sample_rate": 0.0},
    traffic={"timeout": get_settings().request_timeout},
)
class ClassificationService:
    """Loads the model once and predicts class labels and probabilities."""

    # A class attribute, so that `bentoml build` packs the model into the Bento.
    bento_model = bentoml.models.BentoModel(get_settings().bento_model_tag)

    def __init__(self) -> None:
        settings = get_settings()
        threads = model_threads(settings, workers=WORKERS)
        model = load_model(Path(self.bento_model.path), self.bento_model.info.metadata,
                           tag=str(self.bento_model.tag), threads=threads)
        metrics = ServiceMetrics(class_names=model.class_names, stats=model.feature_stats)
        limits = Limits(max_rows=settings.max_rows, max_body_bytes=settings.max_body_bytes,
                        request_timeout=settings.request_timeout)
        # The challenger, if any: loaded and checked like the model, but its failures never stop
        # the service (README "A challenger in the shadow").
        shadow = (load_shadow(settings.shadow_model_tag, production=model, limits=limits,
                              queue_size=settings.shadow_queue_size) if settings.shadow_model_tag else None)
        http_app.bind(model, limits=limits, api_key=settings.api_key, metrics=metrics, fast_path=settings.fast_path,
                      shadow=shadow)
        # BentoML starts uvicorn with its access log on, and uvicorn formats each request's client
        # address and quoted path for it whenever "uvicorn.access" has a handler, here the root
        # logger's, only for the record to be dropped below WARNING. Without handlers of its own
        # and without propagation, as uvicorn's own access_log=False leaves it, nothing is formatted.
        # BentoML's access log (`logging.access` above) is a middleware of its own, and stays off.
        access = logging.getLogger("uvicorn.access")
        access.handlers, access.propagate = [], False
        # Everything loaded so far lives as long as the process: keep it out of the GC's scans.
        gc.freeze()
        if shadow is not None:
            shadow.start()  # in this worker process: one thread each
        logger.info("serving %s version %s (%s), fast path %s, %d model thread(s) for requests of %d rows or more",
                    model.summary["name"], model.summary["version"], self.bento_model.tag,
                    "on" if settings.fast_path else "off", model.info["threads"], PARALLEL_ROWS)

    @bentoml.api(route="/predict")
    async def predict(
        self,
        features: Annotated[list[Row] | Row | None, Field(description="rows of numbers in feature order")] = None,
        records: Annotated[list[Record] | None, Field(description="rows by column name; null = missing")] = None,
    ) -> PredictResponse:
        """Class label and probabilities for each row (send `features` or `records`)."""
        # async: it runs on the event loop like the fast path, not on a thread pool.
        return http_app.native.predict_values(features=features, records=records)


ClassificationService.add_asgi_middleware(JsonErrors)
