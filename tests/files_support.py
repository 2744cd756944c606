"""Fixtures of the file-API tests: the app on each storage backend, helpers to look inside.

``files_app`` is parametrized over the blob stores: ``local`` (the core's backend, in a
temporary directory) and ``s3`` (the ``modelreg-s3`` plugin against moto's standalone S3
server, started in its own process; skipped when the plugin or moto is not installed).
Import the fixtures into a test module::

    from files_support import files_app, files_wsgi, s3_endpoint  # noqa: F401
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from helpers import API
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from openapi_checking import CheckedTestApp

KiB = 1024
MiB = 1024 * KiB
#: Small limits so that the tests move little data: one PUT (and one chunk) up to 8 MiB,
#: chunks of at least 64 KiB locally and 5 MiB (S3's smallest part) on S3.
MAX_PUT = 8 * MiB
MIN_CHUNK = {"local": 64 * KiB, "s3": 5 * MiB}
BACKENDS = ["local", "s3"]
S3_BUCKET = "modelreg-files-test"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_url(model: str, version: int | str, path: str) -> str:
    """The URL of a file; the path is percent-encoded (UTF-8), its slashes kept."""
    return f"{API}/models/{model}/versions/{version}/files/{quote(path, safe='/')}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server process on a free loopback port, with the test bucket."""
    try:
        import boto3
        import modelreg_s3  # noqa: F401
        import moto.server  # noqa: F401 - only to know it is installed
    except ImportError:
        pytest.skip("modelreg-s3 or moto[server] is not installed")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the S3 server exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the S3 server did not start"
                time.sleep(0.1)
        boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        ).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def storage_settings(backend: str, request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], list]:
    """Settings and plugins of an app on ``backend``, with a fresh, empty store."""
    settings = {
        "modelreg.upload.max_put_size": str(MAX_PUT),
        "modelreg.upload.min_chunk_size": str(MIN_CHUNK[backend]),
    }
    if backend == "local":
        settings["modelreg.storage"] = "local"
        settings["modelreg.storage.local.path"] = str(tmp_path_factory.mktemp("files-blobs"))
        return settings, list(CORE_PLUGINS)
    endpoint = request.getfixturevalue("s3_endpoint")
    settings.update({
        "modelreg.storage": "s3",
        "modelreg.storage.s3.bucket": S3_BUCKET,
        "modelreg.storage.s3.prefix": f"files-{uuid.uuid4().hex[:12]}",
        "modelreg.storage.s3.endpoint_url": endpoint,
        "modelreg.storage.s3.region": "us-east-1",
        "modelreg.storage.s3.access_key_id": "testing",
        "modelreg.storage.s3.secret_access_key": "testing",
    })
    return settings, [*CORE_PLUGINS, "modelreg_s3"]


@pytest.fixture(scope="module", params=BACKENDS)
def files_wsgi(request, modelreg_database, tmp_path_factory) -> Iterator[Any]:
    """The app over the session's database and a store of its own, on each backend."""
    settings, plugins = storage_settings(request.param, request, tmp_path_factory)
    app = make_app({"sqlalchemy.url": modelreg_database.url, "retry.attempts": "3",
                    **settings}, plugins)
    app.storage_backend = request.param
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def files_app(files_wsgi, openapi_checker) -> Iterator[CheckedTestApp]:
    """A checked WebTest app of :func:`files_wsgi`; the database is emptied after."""
    app = CheckedTestApp(files_wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    app.checker = openapi_checker
    yield app
    clear_database(files_wsgi.registry["db_engine"])


def store_of(app: Any) -> Any:
    """The blob store of a (WebTest or WSGI) app."""
    return getattr(app, "app", app).registry["modelreg.blob_store"]


def rows(app: Any, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as dicts."""
    engine = getattr(app, "app", app).registry["db_engine"]
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]


def blob_digests(app: Any) -> list[str]:
    """Every digest in the app's blob store (duplicates would show twice)."""
    return list(store_of(app).iter_digests())


def local_leftovers(app: Any) -> list[str]:
    """Temporary files of the local store (``tmp/`` and ``uploads/``); ``[]`` on other
    backends."""
    store = store_of(app)
    root = getattr(store, "root", None)
    if root is None:
        return []
    return sorted(f"{area}/{name}" for area in ("tmp", "uploads")
                  for name in os.listdir(root / area))
