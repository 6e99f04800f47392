"""The artifact store and the tracking server's login: checked before writing, each failure one line with an exit code of its own.

Artifacts go to a bucket either through the tracking server (proxied: `mlflow-artifacts:/` URIs;
the server holds the S3 keys) or straight from this process (direct: `s3://` URIs; the keys are
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the endpoint MLFLOW_S3_ENDPOINT_URL). No line ever
holds a secret: only the endpoint, the bucket and what the server answered.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from urllib.parse import urlparse

from training.cli import CommandError

EXIT_CREDENTIALS = 4
EXIT_NO_BUCKET = 5
EXIT_STORE_DOWN = 6
EXIT_LOGIN = 7
EXIT_DENIED = 8


class CredentialsRefused(CommandError):
    """The object store refused the S3 credentials."""

    exit_code = EXIT_CREDENTIALS


class BucketMissing(CommandError):
    """The bucket of the artifact location does not exist."""

    exit_code = EXIT_NO_BUCKET


class StoreUnavailable(CommandError):
    """The object store cannot be reached (or the tracking server cannot reach it)."""

    exit_code = EXIT_STORE_DOWN


class LoginRefused(CommandError):
    """The tracking server refused the username and password (HTTP 401)."""

    exit_code = EXIT_LOGIN


class PermissionDenied(CommandError):
    """The tracking server's user may not do this (HTTP 403): e.g. a read-only user promoting."""

    exit_code = EXIT_DENIED


_ANSWERED = re.compile(r"request to endpoint (\S*) failed with error code (\d{3}) != 200\. Response body: '(.*)'",
                       re.DOTALL)
_REFUSED_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403", "InvalidToken"}
_MISSING_CODES = {"NoSuchBucket", "404"}


def _chain(error: BaseException) -> Iterator[BaseException]:
    """error and every exception it was raised from or during."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _where(location: str | None) -> tuple[str, str]:
    """(endpoint, bucket) of an s3:// location as this process reaches it."""
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3"
    bucket = urlparse(location).netloc if location and location.startswith("s3://") else "?"
    return endpoint, bucket


def _from_boto(error: BaseException, location: str | None) -> CommandError | None:
    """A botocore failure of a direct (s3://) location, named by endpoint and bucket."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    endpoint, bucket = _where(location)
    if isinstance(error, NoCredentialsError):
        return CredentialsRefused(f"no S3 credentials to write bucket {bucket} at {endpoint}: set "
                                  f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)):
        return StoreUnavailable(f"the object store {endpoint} (bucket {bucket}) is unreachable")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING_CODES or status == 404:
            return BucketMissing(f"bucket {bucket} does not exist at {endpoint}")
        if status is not None and status >= 500:  # e.g. InternalError while it shuts down
            return StoreUnavailable(f"the object store {endpoint} (bucket {bucket}) failed: {code or status}")
        if code in _REFUSED_CODES or status in (401, 403):
            return CredentialsRefused(f"the object store {endpoint} refused the S3 credentials for bucket "
                                      f"{bucket} ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return None


def _answer(response) -> tuple[str, str]:
    """(error_code, message) of an MLflow error answer, or ("", a short text)."""
    try:
        document = response.json()
        return str(document.get("error_code", "")), str(document.get("message", ""))
    except ValueError:
        return "", response.text.strip()[:80]


def _from_server(status: int, code: str, message: str, url: str, *, artifacts: bool) -> CommandError | None:
    """An HTTP failure of the tracking server: its login, its permissions, or (artifacts: an answer of
    its artifact routes) its artifact store."""
    about_artifacts = artifacts or message.startswith("Failed to")  # MLflow's proxied artifact handlers say so
    if status == 401 and not about_artifacts:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = f"user {user!r}" if user else "an anonymous client (MLFLOW_TRACKING_USERNAME is not set)"
        return LoginRefused(f"the tracking server {url} refused the login of {who}: check "
                            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if status == 403 and not about_artifacts:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "anonymous")
        return PermissionDenied(f"the tracking server {url} does not allow user {user!r} to do this: "
                                f"{message or code or 'permission denied'}")
    if status in (401, 403) and about_artifacts:
        return CredentialsRefused(f"the artifact store of the tracking server {url} refused the server's S3 "
                                  f"credentials: {message}")
    if status == 404 and "bucket" in message.lower():
        return BucketMissing(f"the artifact store of the tracking server {url}: {message}")
    if status >= 500 and about_artifacts:
        return StoreUnavailable(f"the tracking server {url} cannot read or write its artifact store "
                                f"(HTTP {status}); its log says why")
    return None


def describe_failure(error: BaseException, *, location: str | None = None,
                     tracking_uri: str = "") -> CommandError | None:
    """The one-line CommandError for a failure of the artifact store or of the login, else None."""
    from mlflow.exceptions import RestException

    for cause in _chain(error):
        if isinstance(cause, CommandError):
            return cause
        found = _from_boto(cause, location)
        if found is None and isinstance(cause, RestException):
            found = _from_server(cause.get_http_status_code(), cause.error_code, cause.message, tracking_uri,
                                 artifacts=False)
        response = getattr(cause, "response", None)
        if found is None and response is not None and hasattr(response, "status_code"):
            found = _from_server(response.status_code, *_answer(response), tracking_uri,
                                 artifacts="mlflow-artifacts" in str(getattr(response, "url", "")))
        answered = _ANSWERED.search(str(cause))  # MLflow's own wording of a non-REST answer
        if found is None and answered is not None:
            found = _from_server(int(answered[2]), "", answered[3], tracking_uri,
                                 artifacts="mlflow-artifacts" in answered[1])
        if found is None and "mlflow-artifacts" in str(cause) and "500 error responses" in str(cause):
            found = _from_server(500, "", "", tracking_uri, artifacts=True)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def translated(*, location: str | None = None, tracking_uri: str = "") -> Iterator[None]:
    """Inside: a failure of the artifact store or of the login leaves as its CommandError."""
    try:
        yield
    except CommandError:
        raise
    except Exception as error:
        found = describe_failure(error, location=location, tracking_uri=tracking_uri)
        if found is None:
            raise
        raise found from error


def check_artifact_store(location: str, *, tracking_uri: str = "") -> None:
    """Fail in one line, before anything is written, unless the artifact location can be listed.

    Direct (s3://): this process's own keys reach the bucket. Proxied (mlflow-artifacts:/): the
    tracking server reaches its bucket. Other locations (a local folder) are not checked.
    """
    import mlflow

    if not location.startswith(("s3://", "mlflow-artifacts:")):
        return
    with translated(location=location, tracking_uri=tracking_uri):
        mlflow.artifacts.list_artifacts(artifact_uri=location)
