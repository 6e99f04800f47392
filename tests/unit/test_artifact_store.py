"""Which failures of the artifact store and of the tracking server's login get which one line and exit code."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from mlflow.exceptions import MlflowException

from training.artifact_store import (EXIT_CREDENTIALS, EXIT_DENIED, EXIT_NO_BUCKET, EXIT_STORE_DOWN,
                                     describe_failure)

pytestmark = pytest.mark.unit

LOCATION = "s3://team-bucket/artifacts/1"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "ListObjectsV2")


@pytest.mark.parametrize("error, exit_code", [
    (_client_error("SignatureDoesNotMatch", 403), EXIT_CREDENTIALS),
    (_client_error("InvalidAccessKeyId", 403), EXIT_CREDENTIALS),
    (_client_error("NoSuchBucket", 404), EXIT_NO_BUCKET),
    (_client_error("InternalError", 500), EXIT_STORE_DOWN),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/team-bucket"), EXIT_STORE_DOWN),
])
def test_direct_failures_name_the_endpoint_and_bucket(error, exit_code, monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    wrapped = MlflowException("Failed to list artifacts")
    wrapped.__cause__ = error
    found = describe_failure(wrapped, location=LOCATION)
    assert found is not None and found.exit_code == exit_code
    assert "http://127.0.0.1:9" in str(found) and "team-bucket" in str(found) and "s3cr3t" not in str(found)


def test_a_403_of_the_registry_is_permission_denied_and_a_500_is_not_the_store():
    denied = MlflowException("API request to endpoint /api/2.0/mlflow/registered-models/alias failed with "
                             "error code 403 != 200. Response body: 'Permission denied'")
    assert describe_failure(denied, tracking_uri="http://t").exit_code == EXIT_DENIED
    crashed = MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code "
                              "500 != 200. Response body: 'oops'")
    assert describe_failure(crashed, tracking_uri="http://t") is None


def test_an_unrelated_error_is_left_alone():
    assert describe_failure(ValueError("not about storage")) is None
