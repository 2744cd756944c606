"""A live registry for the client's tests, its fixtures, and helpers to make model directories.

Test modules import the fixtures (there is no ``conftest.py`` here, since the suite's own
``tests/conftest.py`` is imported as the top-level module ``conftest``)::

    from client_support import client, model_name, registry  # noqa: F401 - fixtures

:func:`start_registry` runs the real server (``pserve`` through
:class:`~modelreg.testing.server.LiveServer`) over a fresh SQLite database and a local blob
store in a temporary directory, closed to anonymous callers, with principals and tokens made
through the server's own security service (as ``modelreg users add`` / ``modelreg tokens
create`` do).  Its single-PUT limit is lowered to 32 MiB so that large files go through
upload sessions without moving gigabytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from modelreg.cli import db_session
from modelreg.security.services import SecurityService
from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer
from modelreg_client import Client

MiB = 1024 * 1024
#: The test server's single-PUT limit and smallest chunk.
MAX_PUT = 32 * MiB
MIN_CHUNK = 8 * MiB


@dataclass
class Registry:
    """A running registry: its URL, an admin token, a read-only token, its blob store."""

    server: LiveServer
    url: str
    token: str
    read_token: str
    blob_root: Path
    settings: dict[str, str]

    def blob_path(self, sha256: str) -> Path:
        """Where the local backend keeps the blob ``sha256``."""
        return self.blob_root / "blobs" / "sha256" / sha256[:2] / sha256[2:4] / sha256


@contextmanager
def start_registry(**extra: str) -> Iterator[Registry]:
    """A live registry for the duration of the block (``extra`` settings added); everything
    is removed afterwards."""
    database = TestDatabase.create("sqlite")
    blobs = Path(tempfile.mkdtemp(prefix="modelreg-client-blobs-"))
    try:
        settings = {
            "sqlalchemy.url": database.url,
            "modelreg.storage": "local",
            "modelreg.storage.local.path": str(blobs),
            "modelreg.auth.anonymous": "none",
            "modelreg.upload.max_put_size": str(MAX_PUT),
            "modelreg.upload.min_chunk_size": str(MIN_CHUNK),
            "retry.attempts": "3",
            # scans (the installed modelreg-scan) run in the server, as in development.ini
            "modelreg.worker.embedded": "true",
            "modelreg.worker.poll_interval": "0.2",
            # /metrics for the admin token: the file bytes the server received
            "modelreg.metrics.enabled": "true",
            **extra,
        }
        with db_session(settings) as db:
            security = SecurityService(db, actor="client-tests")
            security.create_principal("ci", is_admin=True, kind="service")
            security.create_principal("reader")
            security.create_grant(principal="reader", pattern="*", level="read")
            _, token = security.create_token("ci", scopes=["admin"])
            _, read_token = security.create_token("reader", scopes=["read"])
        with LiveServer(settings, threads=8) as server:
            yield Registry(server, server.url, token, read_token, blobs, settings)
    finally:
        database.drop()
        shutil.rmtree(blobs, ignore_errors=True)


def random_bytes(size: int) -> bytes:
    """``size`` random bytes after nine NULs: the server's scanner takes a few percent of
    random files for malformed pickles (their first byte is an opcode), and one in some ten
    thousand for a safetensors file (a ``{`` after the 8-byte length, then a quote, brace
    or space) whose header is too long, and rejects the version."""
    head = b"\0" * min(size, 9)
    return head + os.urandom(size - len(head))


def write_random(path: Path, size: int, block: int = 8 * MiB) -> str:
    """Write ``size`` random bytes (:func:`random_bytes`) to ``path`` in blocks; return their
    sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            n = min(block, remaining)
            data = random_bytes(n) if remaining == size else os.urandom(n)
            out.write(data)
            digest.update(data)
            remaining -= len(data)
    return digest.hexdigest()


def received_bytes(registry: Registry, direction: str = "upload") -> float:
    """File bytes the server has received so far (``modelreg_transfer_bytes_total``), or
    sent with ``direction="download"``."""
    response = requests.get(f"{registry.url}/metrics", timeout=30,
                            headers={"Authorization": f"Bearer {registry.token}"})
    response.raise_for_status()
    return sum(float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()
               if line.startswith("modelreg_transfer_bytes_total{")
               and f'direction="{direction}"' in line)


def sent_bytes(registry: Registry) -> float:
    """File bytes the server has sent so far (downloads)."""
    return received_bytes(registry, "download")


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found[path.relative_to(root).as_posix()] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return found


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """A live registry (Waitress in a subprocess) for the test module."""
    with start_registry() as running:
        yield running


@pytest.fixture
def client(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """An admin client of the registry, keeping push state in a temporary directory."""
    with Client(registry.url, registry.token,
                state_dir=tmp_path_factory.mktemp("state")) as admin:
        yield admin


@pytest.fixture
def model_name() -> str:
    """A model name no other test uses."""
    return f"m-{uuid.uuid4().hex[:10]}"
