"""What every command shares: its logging, and one readable line and an exit code for each failure."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from serving.errors import one_line

logger = logging.getLogger(__name__)


class CommandError(RuntimeError):
    """A failure a command expects: printed as `error: <message>` (one line), exit code 1."""

    exit_code = 1
    prefix = "error: "


def configure_logging() -> None:
    """Plain lines on stdout for the commands; MLflow's own chatter only from warnings up."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    # MLflow sets its own loggers' level when it is first imported, which may come later.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # boto3 (S3 artifacts) says at INFO where it found its credentials, on every command.
    logging.getLogger("botocore").setLevel(logging.WARNING)


def run_command(work: Callable[[], int | None], *, failure: str) -> int:
    """work()'s exit code (None: 0); a failure as one line, never a traceback ("<failure>: ..." if unexpected)."""
    try:
        return work() or 0
    except CommandError as error:
        logger.error("%s%s", error.prefix, one_line(error))
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - a command answers in one line, never a traceback
        logger.error("error: %s: %s", failure, one_line(error))
        return 1
