"""The two error helpers every side shares: a refusal of a request, and an error as one line."""

from __future__ import annotations


class RequestError(ValueError):
    """A bad request: the status to answer with, one readable sentence, and a reason for metrics."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # a short label for metrics


def one_line(error: BaseException) -> str:
    """An exception's message as one line: its first line, or its type when it has none."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
