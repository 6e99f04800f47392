"""Our endpoints (/predict, /invocations, /health, /metadata) as one small ASGI app.

FastAPI declares the routes so that BentoML's OpenAPI document and Swagger UI describe them,
but requests are answered by `PredictionApp.__call__` directly: the per-request work of a
router, pydantic models and a thread hand-off cost more than the model itself.
"""

import asyncio
import hmac
import json
import logging
import time
from typing import Annotated, Any


from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from serving.contract import (
    MAX_ABS_FEATURE,
    AnswerWriter,
    PredictRequestReader,
    RequestError,
    error_body,
    parse_mlflow_request,
    table_from_values,
)
from serving import mlflow_protocol, v2
from serving.model import LoadedModel
from serving.monitoring import ServiceMetrics
from serving.schema import NUMBER, TableSchema

logger = logging.getLogger(__name__)

JSON_HEADER = (b"content-type", b"application/json")
OWN_PATHS = frozenset({"/predict", "/invocations", "/health", "/metadata", "/ping", "/version"})
V2_PREFIX = "/v2"
JSON_ONLY = (b"application/json",)
METRICS_PATH = "/metrics"  # BentoML's Prometheus endpoint


def is_own_path(path: str) -> bool:
    """True for the routes this app answers: ours, MLflow's and the Open Inference Protocol's."""
    return path in OWN_PATHS or path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def route_label(path: str) -> str:
    """The metrics label of a path: V2 model paths by their template, so labels stay few."""
    if not path.startswith(V2_PREFIX) or path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        return path
    if path.startswith("/v2/models/"):
        for suffix in ("/infer", "/ready"):
            if path.rstrip("/").endswith(suffix):
                return "/v2/models/{name}" + suffix
        return "/v2/models/{name}"
    return "/v2/other"


def request_model(*, schema: TableSchema | None, max_rows: int) -> Any:
    """The /predict body schema: rows of numbers (all-numeric models) or records by column name."""
    number = Annotated[float, Field(ge=-MAX_ABS_FEATURE, le=MAX_ABS_FEATURE)]
    n_features = len(schema.features) if schema else None
    fields = {}
    for index, feature in enumerate(schema.features if schema else ()):
        kind = number if feature.type == NUMBER else str
        fields[f"column_{index}"] = (kind | None, Field(..., alias=feature.name))
    record = create_model("Record", __config__=ConfigDict(extra="forbid"),
                          __doc__="One row by column name; null for a missing value.", **fields) \
        if schema else dict[str, number | str | None]
    records = create_model(
        "PredictRecordsRequest", __config__=ConfigDict(extra="forbid"),
        __doc__="Rows by column name: numbers, text for text columns, null for missing values.",
        records=(Annotated[list[record], Field(min_length=1, max_length=max_rows)], ...))
    if schema is not None and not schema.all_numeric:
        return records
    row = Annotated[list[number], Field(min_length=n_features or 1, max_length=n_features)]
    rows = Annotated[list[row], Field(min_length=1, max_length=max_rows)]
    features = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Rows of raw features in the model's feature order; one flat row is one row.",
        features=(rows | row, Field(..., examples=[[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]])),
    )
    return features | records


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


class HealthResponse(BaseModel):
    status: str
    model: ModelInfo | None = None


class ErrorResponse(BaseModel):
    error: str


class MlflowResponse(BaseModel):
    predictions: list[int]


class MlflowErrorResponse(ErrorResponse):
    error_code: str
    message: str


_ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "malformed body", 401: "missing or wrong API key", 405: "wrong method",
    408: "the body did not arrive within the request timeout",
    413: "body over the size limit", 415: "content type is not application/json",
    422: "rows of the wrong length, missing or unknown columns, too many rows, or values of the wrong type",
    503: "model not loaded"}.items()}


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """An Open Inference Protocol V2 inference request."""

    id: str | None = None
    inputs: list[V2Tensor]
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


_V2_ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "a bad tensor: wrong name, shape, datatype or data", 401: "missing or wrong API key",
    404: "another model name or version", 405: "wrong method",
    408: "the body did not arrive within the request timeout",
    413: "body over the size limit", 503: "model not loaded"}.items()}


class BodyDeadlines:
    """The body timeout of every request, kept by one loop timer rather than one per request.

    `asyncio.timeout` starts and cancels a timer for each request: on uvloop that costs ~4 us,
    as much as the prediction, although the body has nearly always arrived with the headers.
    Here a request only notes its task and deadline while it reads (start, finish); one timer,
    set for the earliest deadline, cancels the reads that are overdue when it fires. The timeout
    is the same for all, so the dict's insertion order is deadline order. Each read is cut off at
    its own deadline, and the cancel is taken back as `asyncio.timeout` takes back its own.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reading: dict[asyncio.Task, float] = {}  # task -> deadline
        self._expired: dict[asyncio.Task, int] = {}  # task -> its cancelling() before our cancel
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def start(self, task: asyncio.Task) -> None:
        """task starts to read a body: it is cancelled if still reading `seconds` from now."""
        loop = task.get_loop()
        deadline = loop.time() + self.seconds
        self._reading[task] = deadline
        # A timer is pending for an earlier deadline, unless it belongs to another (closed) loop.
        if self._timer is None or self._timer_loop is not loop:
            self._arm(loop, deadline)

    def expired(self, task: asyncio.Task) -> bool:
        """For a CancelledError in task's read: True (and the cancel taken back) if it is ours."""
        cancelling = self._expired.pop(task, None)
        return cancelling is not None and task.uncancel() <= cancelling

    def finish(self, task: asyncio.Task) -> None:
        """task's read is over; an expiry whose cancel did not land (the body came in the same
        turn of the loop) is taken back."""
        if self._reading.pop(task, None) is None and task in self._expired:
            del self._expired[task]
            task.uncancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = loop.call_at(when, self._expire)
        self._timer_loop = loop

    def _expire(self) -> None:
        self._timer = None
        loop = self._timer_loop
        now = loop.time()
        while self._reading:
            task = next(iter(self._reading))  # the earliest deadline
            deadline = self._reading[task]
            if deadline > now:
                self._arm(loop, deadline)
                return
            del self._reading[task]
            self._expired[task] = task.cancelling()
            task.cancel()


class PredictionApp(FastAPI):
    """Serves /health and /predict from a loaded model; FastAPI only for the OpenAPI schema."""

    def __init__(self) -> None:
        super().__init__(title="classification", openapi_url=None, docs_url=None, redoc_url=None)
        self.model: LoadedModel | None = None
        self.max_rows = 10_000
        self.max_body_bytes = 8 * 1024 * 1024
        self.request_timeout = 10.0
        self.api_key: bytes | None = None
        self.metrics: ServiceMetrics | None = None
        self.fast_path = True
        self.inner: Any = None  # BentoML's own ASGI app, set by in_front_of
        self.reader: PredictRequestReader | None = None  # /predict bodies of the bound model
        self.writer: AnswerWriter | None = None  # /predict answers of the bound model
        self.row_lane = False  # one-row bodies go to the predictor's predict_row, see _predict
        self.deadlines = BodyDeadlines(self.request_timeout)
        self.model_name = ""
        self._health_body = b""
        self._metadata_body = b""
        self._declare_routes(schema=None)

    def _declare_routes(self, *, schema: TableSchema | None) -> None:
        """Routes for the OpenAPI document only: __call__ answers the requests."""
        self.router.routes.clear()
        PredictRequest = request_model(schema=schema, max_rows=self.max_rows)

        @self.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
        def health() -> HealthResponse:
            """Liveness of the model: which version is loaded and how it scored."""

        @self.get("/metadata", response_model=ModelInfo, responses={503: {"model": ErrorResponse}})
        def metadata() -> ModelInfo:
            """Lineage of the served model: registry version, run, metrics, names, hashes."""

        @self.post("/invocations", response_model=MlflowResponse,
                   responses={code: {**spec, "model": MlflowErrorResponse} for code, spec in _ERRORS.items()
                              if code != 422})  # MLflow answers every bad body with 400
        def invocations(request: dict[str, Any]) -> MlflowResponse:
            """`mlflow models serve` compatible scoring: dataframe_split, dataframe_records,
            instances or inputs in; class indices out, as MLflow answers for this model."""

        @self.get("/ping", response_class=Response, responses={200: {"description": "ready"},
                                                               404: {"description": "model not loaded"}})
        def ping() -> None:
            """MLflow's readiness probe (`ScoringServerClient.wait_server_ready`)."""

        @self.get("/version", response_class=Response, responses={200: {"description": "MLflow version"}})
        def version() -> None:
            """The MLflow version that logged the served model, as bare text."""

        name = self.model_name if schema is not None else "{model_name}"

        @self.get("/v2/health/live", tags=["Open Inference Protocol V2"])
        def v2_live() -> dict[str, bool]:
            """V2 liveness."""

        @self.get("/v2/health/ready", tags=["Open Inference Protocol V2"], responses={503: {"description": "not ready"}})
        def v2_ready() -> dict[str, bool]:
            """V2 readiness: 200 once the model is loaded."""

        @self.get(f"/v2/models/{name}", tags=["Open Inference Protocol V2"], responses=_V2_ERRORS)
        def v2_model_metadata() -> dict[str, Any]:
            """V2 model metadata: inputs (datatype, shape) and outputs."""

        @self.post(f"/v2/models/{name}/infer", tags=["Open Inference Protocol V2"], responses=_V2_ERRORS)
        def v2_infer(request: V2InferRequest) -> dict[str, Any]:
            """V2 inference: a [rows, features] FP64/FP32 tensor in; label, probabilities, class_index out."""

        @self.post("/predict", response_model=PredictResponse, responses=_ERRORS)
        # Annotations evaluated here (no `from __future__ import annotations` in this module):
        # FastAPI must see the local PredictRequest class.
        def predict(request: PredictRequest) -> PredictResponse:  # type: ignore[valid-type]
            """Class label and probabilities for each row: numbers in feature order, or records
            by column name (null for a missing value)."""

    def bind(self, model: LoadedModel, *, max_rows: int, max_body_bytes: int,
             request_timeout: float, api_key: str | None,
             metrics: ServiceMetrics | None = None, fast_path: bool = True) -> None:
        """Start answering with this model and these limits."""
        self.fast_path = fast_path
        self.max_rows, self.max_body_bytes = max_rows, max_body_bytes
        self.request_timeout = request_timeout
        self.deadlines = BodyDeadlines(request_timeout)
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics
        self._health_body = json.dumps({"status": "ok", "model": model.info}).encode()
        self._metadata_body = json.dumps(model.info).encode()
        self.model_name = model.summary["name"]
        self._declare_routes(schema=model.schema)
        self.reader = PredictRequestReader(schema=model.schema, max_rows=max_rows)
        self.writer = AnswerWriter(class_names=model.class_names, model=model.summary)
        self.row_lane = model.schema.all_numeric and hasattr(model.predictor, "predict_row")
        self.model = model

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan and the like: FastAPI's own handling
            await super().__call__(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] | tuple = ()  # extra answer headers, seldom any
        path = scope["path"]
        started = time.perf_counter()
        try:
            if path == "/predict" and not self.fast_path:
                # Our checks and errors, then BentoML's whole stack runs the declared API.
                _, body, _ = await self._accept(scope, receive)
                self.reader.read(body)
                status = await self._forward(scope, body, send)
                if self.metrics is not None:
                    self.metrics.request(route_label(path), status, time.perf_counter() - started)
                return
            if path == "/predict":
                model, body, _ = await self._accept(scope, receive)
                status, body = 200, self._predict(model, body)
            elif path == "/invocations":
                status, body = 200, await self._invocations(scope, receive)
            elif path.startswith(V2_PREFIX):
                status, body = await self._v2(scope, receive)
            elif path in ("/ping", "/version"):
                status, body, headers = self._mlflow_probe(scope)
            else:
                status, body, headers = self._describe(scope)
        except RequestError as error:
            status, body = error.status, error_body(error.message)
            if path == "/invocations":  # MLflow clients read error_code and message
                body = mlflow_protocol.error_body(
                    error.message, error_code=mlflow_protocol.error_code_for(status, error.reason))
                status = 400 if status == 422 else status  # MLflow refuses every bad body with 400
            if self.metrics is not None:
                self.metrics.reject(error.reason)
            if status == 405:
                posted = path in ("/predict", "/invocations") or path.rstrip("/").endswith("/infer")
                headers = [(b"allow", b"POST" if posted else b"GET, HEAD")]
            elif status == 401:
                headers = [(b"www-authenticate", b"Bearer")]
        except Exception:  # a bug of ours: answer in JSON, keep serving, log the traceback
            logger.exception("unexpected error on %s", path)
            status, body = 500, error_body("internal error; the server log has the details")
        length = (b"content-length", b"%d" % len(body))
        await send({"type": "http.response.start", "status": status,
                    "headers": [JSON_HEADER, length] if not headers
                    else [*([] if _has_content_type(headers) else [JSON_HEADER]), length, *headers]})
        await send({"type": "http.response.body", "body": body})
        if self.metrics is not None:
            self.metrics.request(route_label(path), status, time.perf_counter() - started)

    def _describe(self, scope: dict) -> tuple[int, bytes, list]:
        """GET /health and GET /metadata."""
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            return 405, error_body(f"use GET for {path}"), [(b"allow", b"GET, HEAD")]
        if self.model is None:
            if path == "/metadata":
                return 503, error_body("the model is not loaded yet"), []
            return 503, json.dumps({"status": "unavailable", "model": None}).encode(), []
        return 200, self._health_body if path == "/health" else self._metadata_body, []

    def _mlflow_probe(self, scope: dict) -> tuple[int, bytes, list]:
        """GET /ping and GET /version, as `mlflow models serve` answers them."""
        if scope["method"] not in ("GET", "HEAD"):
            return 405, error_body(f"use GET for {scope['path']}"), [(b"allow", b"GET, HEAD")]
        if scope["path"] == "/ping":  # MLflow: 200 once the model is loaded, 404 before
            return (200 if self.model else 404), mlflow_protocol.PING_BODY, mlflow_protocol.PING_HEADERS
        version = (self.model.info.get("mlflow_version") if self.model else None) or "unknown"
        return 200, mlflow_protocol.version_body(version), mlflow_protocol.VERSION_HEADERS

    async def _v2(self, scope: dict, receive: Any) -> tuple[int, bytes]:
        """The Open Inference Protocol V2 (KServe, MLServer, Triton): health, metadata, infer."""
        kind, name, version = v2.route(scope["method"], scope["path"])
        if kind == "not_found":
            raise RequestError(404, f"no such endpoint {scope['path']}", "not_found")
        if kind == "method":
            raise RequestError(405, f"wrong method {scope['method']} for {scope['path']}", "method")
        model = self.model
        if kind == "live":
            return 200, b'{"live":true}'
        if kind == "ready":
            return (200 if model else 503), b'{"ready":true}' if model else b'{"ready":false}'
        if kind == "server":
            return 200, json.dumps(v2.server_metadata(version=model.summary["version"] if model else "")).encode()
        if model is None:
            raise RequestError(503, "the model is not loaded yet", "not_ready")
        v2.check_model(name, version, served_name=model.summary["name"], served_version=model.summary["version"])
        if kind == "model_ready":
            return 200, json.dumps({"name": name, "ready": True}).encode()
        if kind == "model":
            return 200, json.dumps(v2.model_metadata(
                schema=model.schema, name=model.summary["name"], version=model.summary["version"],
                platform=f"sklearn-{model.predictor.form}")).encode()
        model, body, _ = await self._accept(scope, receive, media_types=None)
        header_length = next((value for key, value in scope["headers"]
                              if key == b"inference-header-content-length"), None)
        request = v2.parse_infer(body, schema=model.schema, max_rows=self.max_rows,
                                 header_length=int(header_length) if header_length and header_length.isdigit() else None)
        probabilities = model.predictor.predict_proba(request.table)
        if self.metrics is not None:
            self.metrics.observe(request.table.numeric, probabilities.argmax(axis=1))
        return 200, v2.format_infer(probabilities, schema=model.schema, name=model.summary["name"],
                                    version=model.summary["version"], request=request)

    def _predict(self, model: LoadedModel, body: bytes) -> bytes:
        """The answer to a POST /predict body."""
        if not self.row_lane:
            return self._answer(model, self.reader.read(body))
        rows = self.reader.read_row_or_table(body)
        if type(rows) is not list:
            return self._answer(model, rows)
        # One row of numbers, the usual request, for a predictor that takes it as a list: the same
        # answer as _answer's, without a Table and half a dozen small arrays around one row.
        probabilities = model.predictor.predict_row(rows)
        predicted = _argmax(probabilities)
        if self.metrics is not None:
            self.metrics.observe_row(rows, predicted)
        return self.writer.write_row(probabilities, predicted)

    def _answer(self, model: LoadedModel, table) -> bytes:
        """Predict, count, and write the /predict answer."""
        probabilities = model.predictor.predict_proba(table)
        predicted = probabilities.argmax(axis=1)
        if self.metrics is not None:
            self.metrics.observe(table.numeric, predicted)
        return self.writer.write(probabilities, predicted)

    def predict_values(self, *, features: Any = None, records: Any = None) -> "PredictResponse":
        """The declared `predict` API: the same checks and answer as POST /predict, from values."""
        model = self.model
        if model is None:
            raise RequestError(503, "the model is not loaded yet", "not_ready")
        table = table_from_values(features=features, records=records, schema=model.schema,
                                  max_rows=self.max_rows)
        return PredictResponse.model_validate_json(self._answer(model, table))

    async def _forward(self, scope: dict, body: bytes, send: Any) -> int:
        """Hand a checked request, body included, to BentoML's app; return the status it answered."""
        sent = False
        status = 500

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no more body: wait to be cancelled, like a quiet client
            return {"type": "http.disconnect"}

        async def record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.inner(scope, replay, record)
        return status

    async def _invocations(self, scope: dict, receive: Any) -> bytes:
        model, body, media_type = await self._accept(
            scope, receive, media_types=JSON_ONLY + tuple(mlflow_protocol.CSV_CONTENT_TYPES))
        if media_type in mlflow_protocol.CSV_CONTENT_TYPES:
            table = mlflow_protocol.parse_csv(body, schema=model.schema, max_rows=self.max_rows)
        else:
            table = parse_mlflow_request(body, schema=model.schema, max_rows=self.max_rows)
        predicted = model.predictor.predict_proba(table).argmax(axis=1)
        if self.metrics is not None:
            self.metrics.observe(table.numeric, predicted)
        return json.dumps({"predictions": predicted.tolist()}).encode()

    async def _accept(self, scope: dict, receive: Any, *,
                      media_types: tuple[bytes, ...] | None = JSON_ONLY) -> tuple[LoadedModel, bytes, bytes]:
        """Method, readiness, API key, content type and size checks; then the body and its media type.

        media_types None accepts any content type (the V2 protocol's clients send JSON with
        none, or binary tensors as application/octet-stream).
        """
        if scope["method"] != "POST":
            raise RequestError(405, f"use POST for {scope['path']}", "method")
        model = self.model
        if model is None:
            raise RequestError(503, "the model is not loaded yet", "not_ready")
        content_type = authorization = length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
        if self.api_key is not None:
            supplied = authorization[7:] if authorization and authorization[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(supplied, self.api_key):
                raise RequestError(401, "a valid 'Authorization: Bearer <API key>' header is required", "auth")
        media_type, _, parameters = (content_type or b"").partition(b";")
        media_type = media_type.strip().lower()
        if media_types is not None and (media_type not in media_types
                                        or parameters and not _utf8_only(parameters)):
            wanted = " or ".join(t.decode() for t in media_types)
            raise RequestError(415, f"the body must be sent with Content-Type: {wanted} (UTF-8)", "content_type")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise RequestError(413, f"the body is larger than the limit of {self.max_body_bytes} bytes", "too_large")
        task = asyncio.current_task()
        self.deadlines.start(task)
        try:
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body"):  # seldom: most bodies come in one chunk
                body = await self._receive_more(receive, body)
            elif length is None and len(body) > self.max_body_bytes:
                # A chunked body with no Content-Length that arrived in one read: uvicorn hands
                # it over whole, so its size is checked here rather than chunk by chunk.
                raise RequestError(413, f"the body is larger than the limit of {self.max_body_bytes} bytes", "too_large")
        except asyncio.CancelledError:
            if self.deadlines.expired(task):
                raise RequestError(408, f"the body did not arrive within {self.request_timeout:g} s", "timeout") from None
            raise
        finally:
            self.deadlines.finish(task)
        return model, body, media_type

    async def _receive_more(self, receive: Any, body: bytes) -> bytes:
        """The rest of a body that comes in more than one chunk."""
        chunks, size, more = [body], len(body), True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestError(413, f"the body is larger than the limit of {self.max_body_bytes} bytes", "too_large")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _argmax(values: list[float]) -> int:
    """np.argmax of a list: the index of the first largest value, or of the first NaN if any."""
    total = sum(values)
    if total != total:  # a NaN (or inf and -inf): numpy's argmax picks the first NaN
        for index, value in enumerate(values):
            if value != value:
                return index
    return values.index(max(values))


def _has_content_type(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"content-type" for name, _ in headers)


def _utf8_only(parameters: bytes) -> bool:
    """True unless the Content-Type's parameters name something but charset=utf-8 (MLflow's rule)."""
    for parameter in filter(None, (p.strip() for p in parameters.split(b";"))):
        key, _, value = parameter.partition(b"=")
        if key.strip().lower() != b"charset" or value.strip().strip(b'"').lower() != b"utf-8":
            return False
    return True


def in_front_of(inner: Any, app: PredictionApp) -> Any:
    """An ASGI app that answers app's own paths itself and passes everything else to inner.

    BentoML's middleware (tracing, traffic metrics, timeout, concurrency control, context)
    costs more per request than our whole /predict; our routes keep their own metrics and
    body timeout, and every other route keeps BentoML's full stack. Our metrics are written in
    batches (ServiceMetrics.flush): a scrape of /metrics writes the pending batch first.
    """

    app.inner = inner

    async def route(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if is_own_path(scope["path"]):
                await app(scope, receive, send)
                return
            if scope["path"] == METRICS_PATH and app.metrics is not None:
                app.metrics.flush()  # a scrape of this worker includes every request answered so far
        await inner(scope, receive, send)

    return route


class JsonErrors:
    """ASGI middleware: BentoML's plain-text 404 and 405 answers become {"error": ...} JSON."""

    MESSAGES = {404: "no such endpoint; see the API at / (Swagger UI)",
                405: "this endpoint does not accept that method"}

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_own_path(scope["path"]):  # answered in JSON already
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def send_json_errors(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] in self.MESSAGES \
                    and dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"text/plain"):
                held["start"] = message  # replace the body once it is complete
                return
            if message["type"] == "http.response.body" and "start" in held:
                if message.get("more_body"):
                    return
                start = held.pop("start")
                body = error_body(self.MESSAGES[start["status"]])
                headers = [(k, v) for k, v in start.get("headers", []) if k == b"allow"]
                await send({"type": "http.response.start", "status": start["status"], "headers": [
                    JSON_HEADER, (b"content-length", str(len(body)).encode()), *headers]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_json_errors)
