"""Assemble the application: settings, plugins, then each feature in a fixed order."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from pyramid.config import Configurator
from pyramid.events import ContextFound, NewRequest
from pyramid.renderers import JSON

from .openapi import (
    add_method_not_allowed_views,
    refuse_control_characters,
    refuse_undecodable_requests,
)
from .plugins import get_plugin_manager, log_plugins

log = logging.getLogger(__name__)

#: Settings that may come from the environment; an explicit ini setting always wins.
ENVIRONMENT_SETTINGS = {
    "MODELREG_DATABASE_URL": "sqlalchemy.url",
    "MODELREG_STORAGE": "modelreg.storage",
    "MODELREG_STORAGE_LOCAL_PATH": "modelreg.storage.local.path",
    # production.ini sets modelreg.auth.anonymous explicitly, so this cannot open it.
    "MODELREG_AUTH_ANONYMOUS": "modelreg.auth.anonymous",
}


def apply_environment(settings: dict[str, Any], environ: dict[str, str] | None = None) -> None:
    """Fill settings from ``MODELREG_*`` environment variables where the ini left them unset.

    An ini value of the form ``env:NAME`` is always taken from the environment variable
    ``NAME``; it is an error for that variable to be missing.
    """
    environ = os.environ if environ is None else environ
    for variable, key in ENVIRONMENT_SETTINGS.items():
        if not settings.get(key) and environ.get(variable):
            settings[key] = environ[variable]
    for key, value in list(settings.items()):
        if isinstance(value, str) and value.startswith("env:"):
            variable = value[4:].strip()
            if not environ.get(variable):
                raise RuntimeError(
                    f"setting {key} = {value} needs the environment variable {variable}"
                )
            settings[key] = environ[variable]


def configure(
    settings: dict[str, Any],
    *,
    load_entrypoints: bool = True,
    plugins: Iterable[Any] = (),
) -> Configurator:
    """Build the configurator of the app.

    :param settings: the ``[app:main]`` settings.
    :param load_entrypoints: load the plugins of the ``modelreg`` entry-point group (tests
        pass ``False`` and name their plugins).
    :param plugins: plugins to register explicitly.
    """
    settings = dict(settings)
    apply_environment(settings)
    if not settings.get("sqlalchemy.url"):
        raise RuntimeError(
            "no database configured: set sqlalchemy.url or MODELREG_DATABASE_URL"
        )
    pm = get_plugin_manager(settings, load_entrypoints=load_entrypoints, plugins=plugins)
    log_plugins(pm)

    config = Configurator(settings=settings)
    config.registry["modelreg.plugin_manager"] = pm
    config.add_renderer("json", JSON(separators=(",", ":")))
    # Order matters: errors first (every later failure renders as JSON), then the database
    # and its transaction management, then security (the policy, the default permission that
    # refuses any view declared without one, the admin API), then the features, then
    # plugins' own additions.
    config.include(".errors")
    config.include(".logs")  # request ids and the access log
    config.add_subscriber(refuse_undecodable_requests, NewRequest)
    config.add_subscriber(refuse_control_characters, ContextFound)
    config.include(".db")
    config.include(".policy")  # a wrong modelreg.policy.* setting stops start-up here
    # The blob store is built at start-up: an unknown backend stops it here.
    config.include(".storage")
    config.include(".security")
    config.include(".ops")
    config.include(".metrics")  # /metrics, when modelreg.metrics.enabled
    config.include(".registry.views")
    config.include(".files")
    config.include(".worker")  # the findings API; the embedded worker thread, if enabled
    config.include(".plugin_api")  # request.modelreg, the registry of modelreg.api
    pm.hook.modelreg_pyramid_configure(config=config)
    add_method_not_allowed_views(config)
    config.commit()
    return config
