"""Every POST route x every hostile request, and what each must answer: one table.

The promise (README "The HTTP contract" and "Security"): bad input never gets a 5xx; each
refusal is a 4xx whose JSON body holds a one-sentence `error` (and, on /invocations, MLflow's
`error_code` and `message` too), with a status the OpenAPI document (/docs.json) declares.

The table is run by the modules that already start the server each fault needs:
test_serve.py sends the body faults (`served`, default settings), test_limits.py the limit
faults (`limited`: MAX_ROWS=5, MAX_BODY_BYTES=2000, REQUEST_TIMEOUT=1), test_auth.py the
missing or wrong key (`keyed`: API_KEY set).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable
from urllib.parse import urlparse

import httpx
import pytest

from tests.servers import metric_total

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
CELLS = [b"5.1", b"3.5", b"1.4", b"0.2"]  # one iris row (setosa), as JSON or CSV text
V2_MODEL_PATH = "/v2/models/ClassificationModel"


def _json_rows(rows: list[list[bytes]]) -> bytes:
    return b"[" + b", ".join(b"[" + b", ".join(row) + b"]" for row in rows) + b"]"


@dataclass(frozen=True)
class Route:
    """One way to POST rows: its path, its content type and how it writes rows into a body."""

    name: str
    path: str
    content_type: str
    rows: Callable[[list[list[bytes]]], bytes]  # rows of value literals -> request body
    mlflow: bool = False  # refusals also carry MLflow's error_code and message

    def body(self, *, count: int = 1, cell: bytes | None = None, padding: int = 0) -> bytes:
        """A body of `count` iris rows; `cell` replaces the first value of the first row;
        `padding` bytes of what the format ignores (JSON spaces, CSV blank lines) make it longer."""
        rows = [list(CELLS) for _ in range(count)]
        if cell is not None:
            rows[0][0] = cell
        body = self.rows(rows)
        if self.content_type == "text/csv":
            return body + b"\n" * padding
        return body[:-1] + b" " * padding + body[-1:]


ROUTES = [
    Route("predict", "/predict", "application/json",
          lambda rows: b'{"features": ' + _json_rows(rows) + b"}"),
    Route("invocations-json", "/invocations", "application/json",
          lambda rows: b'{"dataframe_split": {"columns": ' + json.dumps(FEATURES).encode()
          + b', "data": ' + _json_rows(rows) + b"}}", mlflow=True),
    Route("invocations-csv", "/invocations", "text/csv",
          lambda rows: b"\n".join([",".join(FEATURES).encode(), *(b",".join(row) for row in rows)]) + b"\n",
          mlflow=True),
    Route("v2-infer", f"{V2_MODEL_PATH}/infer", "application/json",
          lambda rows: b'{"inputs": [{"name": "input", "shape": [%d, 4], "datatype": "FP64", "data": %s}]}'
          % (len(rows), _json_rows(rows))),
]
BY_NAME = {route.name: route for route in ROUTES}

DEEP = b"[" * 100_000 + b"]" * 100_000
# Duplicate keys, one body per route: the same key twice in one JSON object (for CSV: one
# column twice in the header, its own duplicate).
DUPLICATES = {
    "predict": b'{"features": [[5.1, 3.5, 1.4, 0.2]], "features": [[5.1, 3.5, 1.4, 0.2]]}',
    "invocations-json": b'{"dataframe_records": [{"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, '
                        b'"petal length (cm)": 1.4, "petal width (cm)": 0.2, "petal width (cm)": 9}]}',
    "invocations-csv": ",".join(FEATURES[:1] + FEATURES).encode() + b"\n5.1,5.1,3.5,1.4,0.2\n",
    "v2-infer": b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", '
                b'"data": [5.1, 3.5, 1.4, 0.2], "data": [1, 1, 1, 1]}]}',
}
# NaN in rows by column name (/predict `records`, /invocations `dataframe_records`).
_NAN_RECORD = (b'[{"sepal length (cm)": NaN, "sepal width (cm)": 3.5, '
               b'"petal length (cm)": 1.4, "petal width (cm)": 0.2}]')
RECORDS_NAN = {"predict": b'{"records": ' + _NAN_RECORD + b"}",
               "invocations-json": b'{"dataframe_records": ' + _NAN_RECORD + b"}"}


@dataclass(frozen=True)
class Hostile:
    """One hostile request and the answer it must get on each route it applies to."""

    name: str
    server: str  # which fixture's server: "served", "limited" or "keyed"
    status: dict[str, int]  # route name -> expected status; routes not listed: not applicable
    body: Callable[[Route], bytes] = lambda route: route.body()
    headers: Callable[[Route], dict[str, str]] = lambda route: {"content-type": route.content_type}
    # "httpx"; "chunked": 100-byte chunks, a pause after the first (the server reads the body in
    # pieces); "chunked-one-write": the whole chunked body in one write (the server can read it
    # at once); "stalled": Content-Length 100, one byte sent, then nothing.
    send: str = "httpx"
    error_code: dict[str, str] = field(default_factory=dict)  # /invocations: route -> MLflow code
    # route name -> the exact `error` sentence; routes not listed: any one-line sentence will do.
    error: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # the classifier_rejected_requests_total reason it counts under, if checked


def _statuses(predict: int, invocations: int = 400, v2: int = 400, *, csv: int | None = 400) -> dict[str, int]:
    statuses = {"predict": predict, "invocations-json": invocations, "invocations-csv": csv, "v2-infer": v2}
    return {name: status for name, status in statuses.items() if status is not None}


def _every(status: int) -> dict[str, int]:
    """The same status on every route (a refusal before the body is read or parsed)."""
    return _statuses(status, status, status, csv=status)


def _said(sentence: str, routes: tuple[str, ...] = tuple(BY_NAME)) -> dict[str, str]:
    """The same `error` sentence on each of routes (every route by default)."""
    return {route: sentence for route in routes}


JSON_ROUTES = ("predict", "invocations-json", "v2-infer")
# The limits of the `limited` server (test_limits.py) and the key of the `keyed` one (test_auth.py).
TOO_LARGE = "the body is larger than the limit of 2000 bytes"
TOO_SLOW = "the body did not arrive within 1 s"
NO_KEY = "a valid 'Authorization: Bearer <API key>' header is required"


# Each route names what it takes: /predict features or records, /invocations rows whose values may
# be null, V2 tensor data.
_FINITE = {"predict": "features must be finite numbers, and record values finite numbers or null",
           "invocations-json": "the values of the rows must be finite numbers, or null for a missing value",
           "v2-infer": "tensor data must be finite numbers"}


def _not_finite(literal: str, routes: tuple[str, ...]) -> dict[str, str]:
    """The refusal of a NaN or Infinity JSON literal, on each of routes."""
    return {route: f"{literal} is not a number: {_FINITE[route]}" for route in routes}


def _malformed(route: Route) -> bytes:
    if route.name == "invocations-csv":  # a quote in the middle of a quoted cell: csv.Error
        return ",".join(FEATURES).encode() + b'\n"5"x,3.5,1.4,0.2\n'
    return route.body()[:-3]  # truncated JSON


def _no_content_type(route: Route) -> dict[str, str]:
    return {}


HOSTILE = [
    # Body faults: the default server.
    Hostile("empty body", "served", _statuses(400), body=lambda route: b""),
    Hostile("malformed", "served", _statuses(400), body=_malformed),
    Hostile("not UTF-8", "served", _statuses(400), body=lambda route: route.body(cell=b'"\xff\xfe"')
            if route.name != "invocations-csv" else route.body(cell=b"\xff\xfe")),
    # 100k '[': a RecursionError in a naive parser; for CSV, one 200 KB cell (csv.Error).
    Hostile("deeply nested", "served", _statuses(400), body=lambda route: route.body(cell=DEEP)),
    Hostile("huge number", "served", _statuses(422), body=lambda route: route.body(cell=b"1e999")),
    # Python refuses to convert it (sys.int_info.default_max_str_digits is 4300); the answer says
    # so in plain words, without Python's advice to the programmer. In CSV it is a float: inf.
    Hostile("5000-digit integer", "served", _statuses(400), body=lambda route: route.body(cell=b"9" * 5000),
            error={**_said("the body holds a number of 5000 digits; numbers may have at most 4300 digits",
                           JSON_ROUTES),
                   "invocations-csv": "row 0 holds a value outside the accepted range -1e+100 to 1e+100"}),
    # For CSV, NaN (like "nan", "NA", an empty cell) is a missing value, as in MLflow: no refusal.
    Hostile("NaN literal", "served", _statuses(400, csv=None), body=lambda route: route.body(cell=b"NaN"),
            error=_not_finite("NaN", JSON_ROUTES)),
    Hostile("NaN in a records body", "served", {"predict": 400, "invocations-json": 400},
            body=lambda route: RECORDS_NAN[route.name], error=_not_finite("NaN", tuple(RECORDS_NAN))),
    Hostile("Infinity literal", "served", _statuses(400), body=lambda route: route.body(
        cell=b"inf" if route.name == "invocations-csv" else b"Infinity"),
            error=_not_finite("Infinity", JSON_ROUTES)),
    Hostile("duplicate keys", "served", _statuses(400), body=lambda route: DUPLICATES[route.name],
            error_code={"invocations-json": "BAD_REQUEST", "invocations-csv": "INVALID_PARAMETER_VALUE"}),
    # V2 takes any content type (its clients send none, or application/octet-stream).
    Hostile("text/plain content type", "served", _statuses(415, 415, None, csv=415),
            headers=lambda route: {"content-type": "text/plain"}),
    Hostile("no content type", "served", _statuses(415, 415, None, csv=415), headers=_no_content_type),
    Hostile("charset other than UTF-8", "served", _statuses(415, 415, None, csv=415),
            headers=lambda route: {"content-type": f"{route.content_type}; charset=latin-1"}),
    # Limits: the `limited` server.
    Hostile("more rows than MAX_ROWS", "limited", _statuses(422), reason="too_many_rows",
            body=lambda route: route.body(count=6)),
    Hostile("body over MAX_BODY_BYTES", "limited", _every(413), reason="too_large",
            body=lambda route: route.body(padding=3000), error=_said(TOO_LARGE)),
    Hostile("chunked body over MAX_BODY_BYTES", "limited", _every(413), reason="too_large",
            body=lambda route: route.body(padding=3000), send="chunked", error=_said(TOO_LARGE)),
    Hostile("chunked body over MAX_BODY_BYTES in one write", "limited", _every(413), reason="too_large",
            body=lambda route: route.body(padding=3000), send="chunked-one-write", error=_said(TOO_LARGE)),
    Hostile("body that never arrives", "limited", _every(408), reason="timeout", send="stalled",
            error_code={"invocations-json": "DEADLINE_EXCEEDED", "invocations-csv": "DEADLINE_EXCEEDED"},
            error=_said(TOO_SLOW)),
    # API key: the `keyed` server.
    Hostile("no API key", "keyed", _every(401), reason="auth",
            error_code={"invocations-json": "UNAUTHENTICATED", "invocations-csv": "UNAUTHENTICATED"},
            error=_said(NO_KEY)),
    Hostile("wrong API key", "keyed", _every(401), reason="auth",
            headers=lambda route: {"content-type": route.content_type, "authorization": "Bearer wrong"},
            error_code={"invocations-json": "UNAUTHENTICATED", "invocations-csv": "UNAUTHENTICATED"},
            error=_said(NO_KEY)),
]


class UndocumentedStatus(AssertionError):
    """The server answered a status the OpenAPI document does not declare for the operation."""


# Product bugs and documentation gaps found by this table: both found so far are fixed.
KNOWN_FAULTS: dict = {}  # (hostile name, route name) -> pytest mark, for faults not fixed yet


def cases(server: str) -> list:
    """pytest params (hostile request, route) for one server, with the known faults marked."""
    return [pytest.param(hostile, BY_NAME[route], id=f"{route}-{hostile.name}",
                         marks=[KNOWN_FAULTS[(hostile.name, route)]] if (hostile.name, route) in KNOWN_FAULTS else [])
            for hostile in HOSTILE if hostile.server == server for route in hostile.status]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(url: str, hostile: Hostile, route: Route, *, extra_headers: dict[str, str] | None = None) -> Answer:
    """Send one hostile request the way its `send` says; the answer, whatever the transport."""
    body, headers = hostile.body(route), {**hostile.headers(route), **(extra_headers or {})}
    if hostile.send == "httpx":
        response = httpx.post(f"{url}{route.path}", content=body, headers=headers, timeout=30)
        return Answer(response.status_code, dict(response.headers), response.content)
    if hostile.send == "chunked":
        def chunks():  # the pause makes the server see the body in several pieces
            for start in range(0, len(body), 100):
                yield body[start:start + 100]
                if start == 0:
                    time.sleep(0.05)
        response = httpx.post(f"{url}{route.path}", content=chunks(), headers=headers, timeout=30)
        assert response.request.headers.get("transfer-encoding") == "chunked"
        return Answer(response.status_code, dict(response.headers), response.content)
    if hostile.send == "chunked-one-write":
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 500]), body[i:i + 500])
                          for i in range(0, len(body), 500)) + b"0\r\n\r\n"
        return raw_request(url, route.path, headers={**headers, "transfer-encoding": "chunked"}, data=framed)
    if hostile.send == "stalled":  # announces 100 bytes, sends 1, then waits for the answer
        # That the 408 comes from REQUEST_TIMEOUT (1 s) is checked by its message; test_limits
        # checks the deadline itself without timing it.
        return raw_request(url, route.path, headers={**headers, "content-length": "100"}, data=body[:1],
                           close=False)
    raise ValueError(hostile.send)


def raw_request(url: str, path: str, *, headers: dict[str, str], data: bytes, close: bool = True) -> Answer:
    """One HTTP/1.1 POST written to the socket in one piece; reads the whole answer."""
    address = urlparse(url)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    connection = "Connection: close\r\n" if close else ""
    request = f"POST {path} HTTP/1.1\r\nHost: {address.hostname}\r\n{head}{connection}\r\n".encode() + data
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), answer_headers, body)


def _length(received: bytes) -> int:
    """The Content-Length of a response whose head has arrived (0 if it has none)."""
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@lru_cache(maxsize=8)
def documented_statuses(url: str, path: str) -> frozenset[int]:
    """The statuses /docs.json declares for POST path."""
    spec = httpx.get(f"{url}/docs.json").json()
    return frozenset(int(code) for code in spec["paths"][path]["post"]["responses"])


def mlflow_error_codes() -> frozenset[str]:
    from mlflow.protos.databricks_pb2 import ErrorCode

    return frozenset(ErrorCode.keys())


def assert_refused(answer: Answer, hostile: Hostile, route: Route, *, url: str) -> None:
    """The expected 4xx, in JSON, with a one-sentence error (and MLflow's fields on /invocations);
    then that /docs.json declares that status for the route."""
    expected = hostile.status[route.name]
    assert answer.status == expected, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type") == "application/json", answer.headers
    document = json.loads(answer.body)
    # {"error": sentence}; /invocations adds MLflow's two keys, the same sentence as `message`.
    assert set(document) == ({"error", "error_code", "message"} if route.mlflow else {"error"}), document
    message = document["error"]
    assert isinstance(message, str) and 10 <= len(message) <= 300 and "\n" not in message, message
    # A sentence for the client: nothing of Python's internals or advice to its programmer.
    assert not any(word in message for word in ("Traceback", "sys.", "Error:", "Exception")), message
    if route.name in hostile.error:
        assert message == hostile.error[route.name]
    if route.mlflow:
        assert document["message"] == message
        assert document["error_code"] == hostile.error_code.get(route.name, "BAD_REQUEST"), document
        assert document["error_code"] in mlflow_error_codes()
    if expected == 401:
        assert answer.headers.get("www-authenticate") == "Bearer"
    if expected not in documented_statuses(url, route.path):
        raise UndocumentedStatus(f"{expected} is not declared for POST {route.path} in /docs.json")


def assert_refused_and_counted(url: str, hostile: Hostile, route: Route, *,
                               headers: dict[str, str] | None = None) -> None:
    """Send hostile on route: refused as assert_refused says, counted once under its reason in
    /metrics, and the worker free again (a valid request, with headers, answered 200)."""
    counted = rejected(url, hostile.reason)
    assert_refused(send(url, hostile, route), hostile, route, url=url)
    assert rejected(url, hostile.reason) == counted + 1
    assert valid_request(url, route, headers=headers).status_code == 200


def rejected(url: str, reason: str) -> float:
    """classifier_rejected_requests_total{reason=...} as /metrics reports it now."""
    return metric_total(httpx.get(f"{url}/metrics").text, "classifier_rejected_requests_total", reason=reason)


def valid_request(url: str, route: Route, *, headers: dict[str, str] | None = None) -> httpx.Response:
    """One good request on route: the server still answers after the hostile one."""
    return httpx.post(f"{url}{route.path}", content=route.body(),
                      headers={"content-type": route.content_type, **(headers or {})}, timeout=30)
