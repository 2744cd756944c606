"""Fixtures of the web UI's tests: a migrated SQLite database (core and ``modelreg_web``
branches), its settings, and the world of :mod:`webui_support` made once per session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from webui_support import WEB_PLUGINS, World, make_world

from modelreg.testing import TestDatabase, make_app, unavailable


@pytest.fixture(scope="session")
def web_database() -> Iterator[TestDatabase]:
    """A migrated SQLite database with the plugin's branch."""
    try:
        db = TestDatabase.create("sqlite", WEB_PLUGINS)
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
