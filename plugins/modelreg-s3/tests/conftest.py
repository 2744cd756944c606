"""A real S3-compatible server for the tests: moto's standalone server, in its own process.

No in-process mocking of boto3: the backend talks HTTP to a server, as in production.  The
server is started once per session on a free loopback port and killed afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

BUCKET = "modelreg-test"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=REGION,
                                          **CREDENTIALS)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a running S3-compatible server with the bucket ``modelreg-test``."""
    try:
        import moto.server  # noqa: F401 - only to know it is installed
    except ImportError:
        pytest.skip("moto[server] is not installed (it comes with the core's test extra)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION}
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and a fixed module
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"the S3 server exited with {process.returncode}:\n"
                            f"{log.read().decode(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the S3 server did not start within 60 s")
                time.sleep(0.1)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def s3_settings(s3_endpoint: str) -> dict[str, str]:
    """Settings for a store of its own: a fresh key prefix in the shared bucket."""
    return {
        "modelreg.storage": "s3",
        "modelreg.storage.s3.bucket": BUCKET,
        "modelreg.storage.s3.prefix": f"test-{uuid.uuid4().hex[:12]}",
        "modelreg.storage.s3.endpoint_url": s3_endpoint,
        "modelreg.storage.s3.region": REGION,
        "modelreg.storage.s3.access_key_id": CREDENTIALS["aws_access_key_id"],
        "modelreg.storage.s3.secret_access_key": CREDENTIALS["aws_secret_access_key"],
    }


@pytest.fixture
def s3_admin(s3_endpoint: str) -> Any:
    """A plain boto3 client on the test server, for looking behind the store's back."""
    return s3_client(s3_endpoint)
