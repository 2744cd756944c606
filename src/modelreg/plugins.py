"""The plugin manager: specs from :mod:`modelreg.hookspecs`, plugins from entry points."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import version as dist_version
from typing import Any

import pluggy

from . import hookspecs
from .settings import PLUGINS_DISABLED

log = logging.getLogger(__name__)

#: The entry-point group plugins are found in.
ENTRYPOINT_GROUP = hookspecs.PROJECT_NAME
#: Setting with whitespace-separated names of plugins to block (entry-point names).
DISABLED_SETTING = PLUGINS_DISABLED


def disabled_plugins(settings: dict[str, Any]) -> list[str]:
    """The plugin names that ``modelreg.plugins.disabled`` blocks."""
    return (settings.get(DISABLED_SETTING) or "").split()


def get_plugin_manager(
    settings: dict[str, Any] | None = None,
    *,
    load_entrypoints: bool = True,
    plugins: Iterable[Any] = (),
) -> pluggy.PluginManager:
    """Build the plugin manager.

    :param settings: application settings; ``modelreg.plugins.disabled`` is honoured.
    :param load_entrypoints: load every plugin of the ``modelreg`` entry-point group.  Tests
        pass ``False`` and list their plugins explicitly.
    :param plugins: plugin modules or objects to register explicitly.
    :raises pluggy.PluginValidationError: when a plugin implements a hook that does not
        exist (a misspelt ``modelreg_*`` name), so that mistakes fail at start-up.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in disabled_plugins(settings or {}):
        pm.set_blocked(name)
    for plugin in plugins:
        if pm.get_name(plugin) is None and not pm.is_registered(plugin):
            pm.register(plugin)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRYPOINT_GROUP)
    pm.check_pending()
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, str]]:
    """Name, distribution and version of every registered plugin, for logs and the CLI."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        if dist is not None:
            project, ver = dist.project_name, dist.version
        else:
            project = getattr(plugin, "__name__", type(plugin).__name__).split(".")[0]
            try:
                ver = dist_version(project)
            except Exception:
                ver = "unknown"
        rows.append({"name": name, "distribution": project, "version": ver})
    return rows


def log_plugins(pm: pluggy.PluginManager) -> None:
    """Log the loaded plugins with their versions, and the blocked ones."""
    for row in describe_plugins(pm):
        log.info("plugin %s loaded from %s %s", row["name"], row["distribution"], row["version"])
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            log.info("plugin %s disabled by %s", name, DISABLED_SETTING)
