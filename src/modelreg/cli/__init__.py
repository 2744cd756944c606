"""The server's admin subcommands of the ``modelreg`` command (``modelreg.cli`` entry points).

Each takes the ini file of the deployment, as ``pserve`` does.
"""

from __future__ import annotations

from typing import Any

import click
import plaster

from ..config import apply_environment
from ..plugins import get_plugin_manager

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
    """Settings and plugin manager of the deployment described by ``config_uri``."""
    settings = load_settings(config_uri)
    return settings, get_plugin_manager(settings)
