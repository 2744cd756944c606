"""The server's admin subcommands of the ``modelreg`` command (``modelreg.cli`` entry points).

Each takes the ini file of the deployment, as ``pserve`` does.
"""

from __future__ import annotations

import atexit
import getpass
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import plaster
from sqlalchemy.orm import Session

from .. import keys
from ..config import apply_environment, configure
from ..db import database_parts, get_engine, transaction
from ..errors import ApiError
from ..plugins import get_plugin_manager
from ..worker import EMBEDDED_SETTING

ini_argument = click.argument(
    "config_uri", metavar="INI", type=click.Path(exists=True, dir_okay=False)
)


def load_settings(config_uri: str, name: str = "main") -> dict[str, Any]:
    """The ``[app:NAME]`` settings of an ini file, with logging set up from it."""
    loader = plaster.get_loader(config_uri, protocols=["wsgi"])
    loader.setup_logging()
    settings = dict(loader.get_settings("app:" + name))
    apply_environment(settings)
    return settings


def load(config_uri: str) -> tuple[dict[str, Any], Any]:
    """Settings and plugin manager of the deployment described by ``config_uri``, without
    assembling the app: for the commands that must work when it cannot start (``modelreg
    plugins``, ``modelreg db``).  Every other command uses :func:`assemble`."""
    settings = load_settings(config_uri)
    return settings, get_plugin_manager(settings)


def assemble(config_uri: str) -> Any:
    """The Pyramid registry of the deployment, assembled by
    :func:`modelreg.config.configure` as the web app's is (plugins, blob store, job kinds,
    start-up checks), without an embedded worker thread.  Its engine is disposed at exit."""
    settings = load_settings(config_uri)
    settings[EMBEDDED_SETTING] = "false"
    # A command prints its result: the start-up's informational log lines (plugins loaded)
    # would mix with it; warnings and errors still show.
    logging.disable(logging.INFO)
    try:
        registry = configure(settings).registry
    finally:
        logging.disable(logging.NOTSET)
    atexit.register(registry[keys.DB_ENGINE].dispose)
    return registry


def cli_actor() -> str:
    """The actor the audit log records for admin commands: ``cli:<operating-system user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"cli:{user}"


@contextmanager
def db_session(registry: Any) -> Iterator[Session]:
    """A writing session in a transaction of its own (:func:`modelreg.db.transaction`),
    committed when the block succeeds.

    :param registry: the registry of :func:`assemble`; or, for scripts and tests that hold
        only settings, the settings (an engine is then built from them and disposed after).

    An :class:`~modelreg.errors.ApiError` raised in the block aborts the transaction and
    becomes a click error (its message, exit status 1).
    """
    engine = None
    parts = registry
    if keys.DB_SESSION_FACTORY not in registry:  # settings only
        engine = get_engine(registry)
        parts = database_parts(engine)
    try:
        with transaction(parts, write=True) as db:
            yield db
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        if engine is not None:
            engine.dispose()


def each_page(fetch: Any) -> Iterator[Any]:
    """Every row of a paged service listing: ``fetch(page_token)`` returns ``(rows, next)``."""
    token = None
    while True:
        rows, token = fetch(token)
        yield from rows
        if token is None:
            return
