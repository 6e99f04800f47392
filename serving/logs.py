"""The service's log lines: BentoML's text by default, one JSON object per line with LOG_FORMAT=json."""

from __future__ import annotations

import logging
import sys
import time

# Our loggers log refusals and errors at INFO and up (serving.http); BentoML's configuration
# keeps the root at WARNING, so they are raised to INFO when someone reads the lines (json).
OUR_LOGGERS = ("serving", "service")
# What every line holds; refusals and errors add route, status and reason (serving.http).
FIELDS = ("asctime", "levelname", "name", "message")
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
# Attributes BentoML's filters and uvicorn add to records: formatting hints, not data.
NOISE = ("color_message", "levelname_bracketed", "component", "trace_msg", "request_id", "service_name")


def json_formatter() -> logging.Formatter:
    """python-json-logger's formatter: time (ISO 8601, UTC), level, logger, message, then any extra fields."""
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    formatter = JsonFormatter(list(FIELDS), rename_fields=RENAMED, datefmt="%Y-%m-%dT%H:%M:%S%z",
                              reserved_attrs=[*RESERVED_ATTRS, *NOISE])
    formatter.converter = time.gmtime  # one clock for every replica's lines
    return formatter


def configure_logging(log_format: str) -> None:
    """With "json", every handler BentoML set up writes JSON lines to stdout; "text" leaves BentoML's lines as they are."""
    if log_format != "json":
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if logger.handlers:
            # A logger that also propagates would print each line twice: the root prints it once.
            logger.handlers = [] if logger.propagate else [handler]
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
