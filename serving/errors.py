"""Errors every side shares: a refused request (and every reason one gives), and an error as one line."""

from __future__ import annotations


# Every reason a RequestError gives (a unit test finds each one in serving/): the service exports
# the refusal series of each at 0 from start, since Prometheus takes a series' first sample as its
# start and rate() would never show the refusals counted before it.
REASONS = (
    "auth", "bad_binary", "bad_data", "bad_encoding", "bad_header_length", "bad_id", "bad_outputs",
    "bad_parameters", "bad_shape", "bad_tensor", "binary_without_header", "content_type",
    "duplicate_column", "duplicate_input", "duplicate_keys", "duplicate_output", "empty_body",
    "empty_features", "malformed_csv", "malformed_json", "method", "missing_column", "missing_data",
    "missing_features", "missing_input", "missing_inputs", "needs_records", "not_a_number",
    "not_a_row", "not_an_object", "not_finite", "not_found", "not_ready", "not_text",
    "out_of_range", "timeout", "too_large", "too_many_rows", "unknown_column", "unknown_input",
    "unknown_keys", "unknown_model", "unknown_output", "wrong_datatype", "wrong_length",
    "wrong_shape",
)


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
