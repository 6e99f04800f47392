"""HTTP only: the route table's paths answered in front of BentoML, bodies checked, each route's adapter called."""

# Answered here directly, not by a router: its per-request work, pydantic models and a thread
# hand-off cost more than the model itself (README "Performance").

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from serving.core import Follower, Limits, Scorer
from serving.errors import RequestError
from serving.model import LoadedModel
from serving.monitoring import ServiceMetrics
from serving.openapi import OpenApiDocument
from serving.protocols.mlflow_scoring import MlflowProtocol
from serving.protocols import error_body
from serving.protocols.native import NativeProtocol
from serving.protocols.v2 import V2Protocol
from serving.routes import JSON_HEADERS, RouteTable

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"  # BentoML's Prometheus endpoint


class Call(NamedTuple):
    """What an adapter's handler gets of a request: no ASGI, no HTTP checks left to do."""

    path: str
    params: dict[str, str]
    body: bytes
    media_type: bytes
    headers: list[tuple[bytes, bytes]]


class BodyDeadlines:
    """The body timeout of every request, kept by one loop timer rather than one per request."""

    # asyncio.timeout's timer per request costs ~4 us on uvloop, as much as the prediction. Here a
    # read only notes its task and deadline; one timer, for the earliest deadline, cancels overdue
    # reads (one timeout for all: insertion order is deadline order), and the cancel is taken back
    # as asyncio.timeout takes back its own.

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
        """task's read is over; an expiry whose cancel did not land (body in the same turn) is taken back."""
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


class ServingApp:
    """Answers the route table's paths with a bound model; BentoML answers everything else."""

    def __init__(self) -> None:
        self.routes = RouteTable()
        self.native = NativeProtocol()
        self.adapters = {"native": self.native, "mlflow": MlflowProtocol(), "v2": V2Protocol()}
        self.adapters["docs"] = self.docs = OpenApiDocument(self.routes, self.adapters)
        self.limits = Limits()
        self.deadlines = BodyDeadlines(self.limits.request_timeout)
        self.api_key: bytes | None = None
        self.metrics: ServiceMetrics | None = None
        self.model: LoadedModel | None = None
        self.fast_path = True
        self.inner: Any = None  # BentoML's own ASGI app, set by in_front_of

    def bind(self, model: LoadedModel, *, limits: Limits, api_key: str | None,
             metrics: ServiceMetrics | None = None, fast_path: bool = True,
             shadow: Follower | None = None) -> None:
        """Start answering with this model and these limits (and feed the shadow, if any)."""
        self.limits, self.deadlines = limits, BodyDeadlines(limits.request_timeout)
        self.api_key = api_key.encode() if api_key else None
        self.metrics, self.fast_path = metrics, fast_path
        if metrics is not None:
            metrics.expect(route.label for route in self.routes.routes if "POST" in route.methods)
        scorer = Scorer(model, limits=limits, metrics=metrics, shadow=shadow)
        for adapter in self.adapters.values():
            adapter.bind(scorer)
        self.model = model

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan and the like: nothing to start or stop here
            return
        path = scope["path"]
        started = time.perf_counter()
        route, params = self.routes.match(path)
        headers = route.headers if route else JSON_HEADERS
        try:
            if route is None:
                raise RequestError(404, f"no such endpoint {path}", "not_found")
            if route.methods and scope["method"] not in route.methods:  # none: any method (a 404)
                raise RequestError(405, f"use {route.methods[0]} for {path}", "method")
            if "POST" in route.methods:
                body, media_type = await self._read_body(scope, receive, route.media_types)
            else:
                body, media_type = b"", b""
            adapter = self.adapters[route.protocol]
            call = Call(path, params, body, media_type, scope["headers"])
            if route.check and not self.fast_path:
                # Our checks and errors, then BentoML's whole stack runs the declared API.
                getattr(adapter, route.check)(call)
                status = await self._forward(scope, body, send)
                if self.metrics is not None:
                    self.metrics.request(route.label, status, time.perf_counter() - started)
                return
            status, answer = getattr(adapter, route.handler)(call)
        except RequestError as error:
            status, answer = (self.adapters[route.protocol].refuse(error) if route
                              else (error.status, error_body(error.message)))
            if self.metrics is not None:
                self.metrics.reject(error.reason)
            if logger.isEnabledFor(logging.INFO):  # LOG_FORMAT=json (serving/logs.py); else no cost
                logger.info("refused %s %s: %s", scope["method"], path, error.message,
                            extra={"route": route.label if route else path, "status": status, "reason": error.reason})
            if status == 405:
                headers = [*headers, (b"allow", route.allow)]
            elif status == 401:
                headers = [*headers, (b"www-authenticate", b"Bearer")]
        except Exception:  # a bug of ours: answer in JSON, keep serving, log the traceback
            logger.exception("unexpected error on %s", path,
                             extra={"route": route.label if route else path, "status": 500, "reason": "internal"})
            status, answer = 500, error_body("internal error; the server log has the details")
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})
        if self.metrics is not None:
            self.metrics.request(route.label if route else path, status, time.perf_counter() - started)

    async def _read_body(self, scope: dict, receive: Any,
                         media_types: tuple[bytes, ...] | None) -> tuple[bytes, bytes]:
        """Readiness, API key, content type (None: any, as V2 clients send) and size; the body, its media type."""
        self.native.loaded()
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
        limit = self.limits.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise RequestError(413, f"the body is larger than the limit of {limit} bytes", "too_large")
        task = asyncio.current_task()
        self.deadlines.start(task)
        try:
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body"):  # seldom: most bodies come in one chunk
                body = await self._receive_more(receive, body)
            elif length is None and len(body) > limit:
                # A chunked body with no Content-Length that arrived in one read: uvicorn hands
                # it over whole, so its size is checked here rather than chunk by chunk.
                raise RequestError(413, f"the body is larger than the limit of {limit} bytes", "too_large")
        except asyncio.CancelledError:
            if self.deadlines.expired(task):
                raise RequestError(408, f"the body did not arrive within {self.limits.request_timeout:g} s",
                                   "timeout") from None
            raise
        finally:
            self.deadlines.finish(task)
        return body, media_type

    async def _receive_more(self, receive: Any, body: bytes) -> bytes:
        """The rest of a body that comes in more than one chunk."""
        chunks, size, more, limit = [body], len(body), True, self.limits.max_body_bytes
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is larger than the limit of {limit} bytes", "too_large")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

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


def _utf8_only(parameters: bytes) -> bool:
    """True unless the Content-Type's parameters name something but charset=utf-8 (MLflow's rule)."""
    for parameter in filter(None, (p.strip() for p in parameters.split(b";"))):
        key, _, value = parameter.partition(b"=")
        if key.strip().lower() != b"charset" or value.strip().strip(b'"').lower() != b"utf-8":
            return False
    return True


def in_front_of(inner: Any, app: ServingApp, *, document: Callable[[], dict] | None = None) -> Any:
    """An ASGI app answering app's paths itself, and the rest by inner (BentoML's, whose document is document)."""
    # BentoML's middleware (tracing, traffic metrics, timeout, context) costs more per request than
    # our whole /predict: our routes keep their own metrics and body timeout instead.

    app.inner = inner
    if document is not None:
        app.docs.base = document

    async def route(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if app.routes.owns(scope["path"]):
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
        if scope["type"] != "http":
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
                    *JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_json_errors)
