"""Fixtures of the client's tests: one live registry for the session, clients of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from client_support import Registry, start_registry

from modelreg_client import Client


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A live registry (Waitress in a subprocess), closed to anonymous callers."""
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
