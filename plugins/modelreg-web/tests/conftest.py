"""Fixtures of the web UI's tests: a migrated database on SQLite and PostgreSQL (core and
``modelreg_web`` branches), its settings, and the world of :mod:`webui_support` made once
per session and database."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from webui_support import WEB_PLUGINS, World, make_world

from modelreg.testing import TestDatabase, make_app, unavailable


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def web_database(request: pytest.FixtureRequest) -> Iterator[TestDatabase]:
    """A migrated database with the plugin's branch, on SQLite and PostgreSQL."""
    try:
        db = TestDatabase.create(request.param, WEB_PLUGINS)
    except ConnectionError as exc:
        unavailable(str(exc))
    yield db
    db.drop()


@pytest.fixture(scope="session")
def web_settings(web_database: TestDatabase,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """No anonymous access: every page needs a session."""
    return {
        "sqlalchemy.url": web_database.url,
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("web-blobs")),
        "modelreg.auth.anonymous": "none",
        "retry.attempts": "3",
    }


@pytest.fixture(scope="session")
def world(web_settings: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The app and its world (made once per session)."""
    app = make_app(web_settings, WEB_PLUGINS)
    yield make_world(app, web_settings, tmp_path_factory.mktemp("web-ini"))
    app.registry["db_engine"].dispose()
