"""Alembic migrations of the core, plus those of plugins that own tables.

:func:`alembic_config` builds the Alembic configuration from application settings (no
``alembic.ini`` needed); :func:`upgrade` brings a database to the newest revision of the core
and of every plugin branch (``modelreg_migration_locations``).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.config import Config


def _location(spec: str) -> str:
    if ":" in spec and not spec[1:3] == ":\\":  # package:dir, not a Windows drive
        package, _, relative = spec.partition(":")
        return str(files(package).joinpath(relative))
    return spec


def alembic_config(settings: dict[str, Any], hook: Any | None = None) -> Config:
    """The Alembic configuration for the database of ``settings``."""
    config = Config()
    config.set_main_option("script_location", str(files("modelreg").joinpath("migrations")))
    locations = [str(files("modelreg").joinpath("migrations", "versions"))]
    if hook is not None:
        for result in hook.modelreg_migration_locations():
            items: Iterable[str] = [result] if isinstance(result, str) else (result or ())
            locations.extend(_location(item) for item in items)
    config.set_main_option("version_locations", " ".join(locations))
    config.set_main_option("path_separator", "space")
    config.attributes["settings"] = settings
    return config


def upgrade(settings: dict[str, Any], hook: Any | None = None, revision: str = "heads") -> None:
    """Upgrade the database to ``revision`` (by default the head of every branch)."""
    command.upgrade(alembic_config(settings, hook), revision)
