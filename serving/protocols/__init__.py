"""One adapter per protocol over the scoring core: this service's own, MLflow's, and the Open Inference Protocol V2."""

from __future__ import annotations

import json

from serving.core import Scorer
from serving.errors import RequestError


def error_body(message: str) -> bytes:
    """The JSON error answer: `{"error": message}`."""
    return json.dumps({"error": message}).encode()


class Adapter:
    """What every adapter shares: the scorer of the bound model, and refusals as `{"error": sentence}`."""

    tag: dict = {}  # the OpenAPI tag of its routes

    def __init__(self) -> None:
        self.scorer: Scorer | None = None

    def bind(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def refuse(self, error: RequestError) -> tuple[int, bytes]:
        return error.status, error_body(error.message)

    def loaded(self) -> Scorer:
        """The bound model's scorer; 503 before a model is loaded."""
        if self.scorer is None:
            raise RequestError(503, "the model is not loaded yet", "not_ready")
        return self.scorer
