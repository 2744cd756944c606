"""A real S3-compatible server for the tests: moto's standalone server, in its own process.

No in-process mocking of boto3: the backend talks HTTP to a server, as in production.  The
server is the test kit's (``modelreg_s3_server``, :mod:`modelreg.testing.s3`), started once per
session on a free loopback port and stopped afterwards.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from modelreg.testing.s3 import CREDENTIALS, REGION


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=REGION,
                                          **CREDENTIALS)


@pytest.fixture(scope="session")
def s3_endpoint(modelreg_s3_server: Any) -> str:
    """The URL of a running S3-compatible server with the bucket ``modelreg-test``."""
    return modelreg_s3_server.endpoint


@pytest.fixture
def s3_settings(modelreg_s3_server: Any) -> dict[str, str]:
    """Settings for a store of its own: a fresh key prefix in the shared bucket."""
    return modelreg_s3_server.settings()


@pytest.fixture
def s3_admin(s3_endpoint: str) -> Any:
    """A plain boto3 client on the test server, for looking behind the store's back."""
    return s3_client(s3_endpoint)
