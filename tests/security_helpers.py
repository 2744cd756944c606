"""Principals, tokens, grants and models for the security tests, made through the services.

Set-up goes straight through :class:`SecurityService` and :class:`RegistryService` in a
transaction of its own (as the CLI does), so that the requests under test are the only ones
the app sees.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import transaction
from sqlalchemy.orm import Session

from modelreg.db import get_tm_session
from modelreg.files.services import FileService
from modelreg.models import Model
from modelreg.registry.services import RegistryService
from modelreg.security.services import SecurityService

SETUP_ACTOR = "test-setup"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def session(wsgi_app: Any) -> Iterator[Session]:
    """A writing session of the app's database, committed when the block succeeds."""
    registry = wsgi_app.registry
    tm = transaction.TransactionManager(explicit=True)
    with tm:
        yield get_tm_session(registry["dbsession_factory"], tm, registry["db_writer_engine"])


@contextmanager
def security_service(wsgi_app: Any) -> Iterator[SecurityService]:
    with session(wsgi_app) as db:
        yield SecurityService(db, actor=SETUP_ACTOR)


@contextmanager
def registry_service(wsgi_app: Any) -> Iterator[RegistryService]:
    registry = wsgi_app.registry
    with session(wsgi_app) as db:
        yield RegistryService(db, registry["modelreg.plugin_manager"].hook, registry.settings,
                              actor=SETUP_ACTOR)


def add_principal(
    wsgi_app: Any,
    name: str,
    *,
    admin: bool = False,
    grants: Iterable[tuple[str, str]] = (),
    scopes: Iterable[str] = ("admin",),
    service: bool = False,
) -> str:
    """Create a principal with grants ``(pattern, level)`` and a token; returns the token.

    The default scope ``admin`` does not cap anything: the token may do all the principal may.
    """
    with security_service(wsgi_app) as security:
        security.create_principal(name, is_admin=admin, kind="service" if service else "user")
        for pattern, level in grants:
            security.create_grant(principal=name, pattern=pattern, level=level)
        _, token = security.create_token(name, scopes=list(scopes))
    return token


def add_token(wsgi_app: Any, name: str, scopes: Iterable[str]) -> str:
    """Another token of an existing principal."""
    with security_service(wsgi_app) as security:
        _, token = security.create_token(name, scopes=list(scopes))
    return token


def public_id(token: str) -> str:
    """The public id of a token: the part between ``mr_`` and the secret."""
    return token.split("_")[1]


def seed_model(wsgi_app: Any, name: str = "fraud-detector") -> None:
    """A model with a tag, a ready version 1 (tagged, aliased ``champion``, holding
    ``model.bin``) and draft 2 (holding ``draft.bin``)."""
    store = wsgi_app.registry["modelreg.blob_store"]
    info = store.put(io.BytesIO(b"weights"))
    with registry_service(wsgi_app) as registry:
        files = FileService(registry, store)
        registry.create_model(name, "a model", {"team": "risk"})
        version = registry.create_version(name, description="", metadata={}, lineage={},
                                          tags={"stage": "prod"})
        files.add_file(version, "model.bin", info, "application/octet-stream")
        registry.finalize_version(name, "1")
        registry.set_alias(name, "champion", 1)
        draft = registry.create_version(name, description="", metadata={}, lineage={},
                                        tags={})
        files.add_file(draft, "draft.bin", info, "application/octet-stream")


def delete_models(wsgi_app: Any) -> None:
    """Delete every model (versions, tags and aliases go with them)."""
    with wsgi_app.registry["db_writer_engine"].begin() as conn:
        conn.execute(sa.delete(Model))
