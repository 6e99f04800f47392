"""The route table: every path answered here; dispatch, metric labels, Allow headers and OpenAPI read it."""

# A template's [optional part] is left out of its label, so labels stay few. Under an owned prefix
# (/v2) an unmatched path is that protocol's 404; every other path is BentoML's (/livez, /metrics...).

from __future__ import annotations

import re
from dataclasses import dataclass, field

from serving.protocols.mlflow_scoring import CSV_CONTENT_TYPES, PING_HEADERS, VERSION_HEADERS

GET = ("GET", "HEAD")
POST = ("POST",)
JSON_HEADERS = ((b"content-type", b"application/json"),)


@dataclass(frozen=True)
class Route:
    """One path template, its methods, and who answers it."""

    path: str
    methods: tuple[str, ...]
    protocol: str  # "native", "mlflow", "v2" or "docs": the adapter
    handler: str  # the adapter's method that answers
    summary: str  # in the OpenAPI document; a route without one is not listed
    media_types: tuple[bytes, ...] | None = (b"application/json",)  # of a POST body; None: any
    headers: tuple = JSON_HEADERS  # of every answer
    check: str = ""  # with FAST_PATH=false: the adapter's checks, then BentoML's stack answers
    label: str = field(init=False)  # for metrics and OpenAPI: the template without its optional part
    allow: bytes = field(init=False)  # the Allow header of a 405

    def __post_init__(self) -> None:  # worked out once, not on every request
        object.__setattr__(self, "label", re.sub(r"\[.*?\]", "", self.path))
        object.__setattr__(self, "allow", ", ".join(self.methods).encode())


ROUTES = (
    Route("/predict", POST, "native", "predict", "Class label and probabilities for each row",
          check="check"),
    Route("/health", GET, "native", "health", "Which model version is loaded and how it scored"),
    Route("/metadata", GET, "native", "metadata", "Lineage of the served model: registry version, run, metrics, hashes"),
    Route("/invocations", POST, "mlflow", "invocations", "`mlflow models serve` scoring: the class index of each row",
          media_types=(b"application/json", *sorted(CSV_CONTENT_TYPES))),
    Route("/ping", GET, "mlflow", "ping", "MLflow's readiness probe", headers=tuple(PING_HEADERS)),
    Route("/version", GET, "mlflow", "version", "The MLflow version that logged the served model",
          headers=tuple(VERSION_HEADERS)),
    Route("/v2", GET, "v2", "server", "Server metadata"),
    Route("/v2/health/live", GET, "v2", "live", "Liveness"),
    Route("/v2/health/ready", GET, "v2", "ready", "Readiness: 200 once the model is loaded"),
    Route("/v2/models/{name}[/versions/{version}]", GET, "v2", "model", "Model metadata: input and output tensors"),
    Route("/v2/models/{name}[/versions/{version}]/ready", GET, "v2", "model_ready", "Model readiness"),
    Route("/v2/models/{name}[/versions/{version}]/infer", POST, "v2", "infer",
          "Inference: tensors in; label, probabilities and class_index out", media_types=None),
    Route("/docs.json", GET, "docs", "document", ""),  # no summary: not in the document itself
    Route("/", GET, "docs", "index", "", headers=((b"content-type", b"text/html; charset=utf-8"),)),
)
# Paths under these prefixes are ours even when no route matches: that protocol's 404.
OWNED_PREFIXES = {"/v2": Route("/v2/other", (), "v2", "not_found", "")}  # any method


def _pattern(template: str) -> re.Pattern:
    """A template as a regular expression: {name} is one path segment, [...] optional."""
    text = re.escape(template).replace(r"\[", "(?:").replace(r"\]", ")?")
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", text) + "$")


class RouteTable:
    """Finds the route of a path: exact paths by one dict lookup, templates by their patterns."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes
        self._exact = {route.path: route for route in routes if "{" not in route.path}
        self._patterns = [(_pattern(route.path), route) for route in routes if "{" in route.path]

    def owns(self, path: str) -> bool:
        """True for the paths answered here rather than by BentoML."""
        return path in self._exact or self._prefix(path) is not None

    def match(self, path: str) -> tuple[Route | None, dict[str, str]]:
        """The route of path and its parameters; (None, {}) for a path that is not ours."""
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        prefix = self._prefix(path)
        if prefix is None:
            return None, {}
        if len(path) > 1 and path.endswith("/"):  # one trailing slash is ignored under a prefix
            path = path[:-1]
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for pattern, route in self._patterns:
            found = pattern.match(path)
            if found:
                return route, {k: v for k, v in found.groupdict().items() if v is not None}
        return OWNED_PREFIXES[prefix], {}

    def label(self, path: str) -> str:
        """The metrics label of a path: its route's template, so that labels stay few."""
        route, _ = self.match(path)
        return route.label if route else path

    @staticmethod
    def _prefix(path: str) -> str | None:
        for prefix in OWNED_PREFIXES:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None
