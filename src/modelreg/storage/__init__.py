"""The blob store: the backend named by ``modelreg.storage``, found through a hook.

Backends are plugins: each implements ``modelreg_storage_backends(settings)`` and returns
:class:`modelreg.api.BackendDescription` values.  The core's own local-filesystem backend
(:mod:`modelreg.storage.local`) is registered the same way, through the ``modelreg``
entry-point group, and knows no more than a third party's would.  There is no
``if backend == ...`` here: a name is looked up among the descriptions, and that is all.

Settings:

``modelreg.storage``
    the backend's name (default ``local``).
``modelreg.storage.<name>.*``
    the backend's own settings, read by its factory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from .. import keys
from ..interfaces import IBlobStore, IDirectUploads
from ..settings import STORAGE

if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.request import Request

    from ..types import BackendDescription

log = logging.getLogger(__name__)

#: The setting that names the backend, and its default.
STORAGE_SETTING = STORAGE
DEFAULT_BACKEND = "local"
#: Where the built store lives in the Pyramid registry.
REGISTRY_KEY = keys.BLOB_STORE


def backend_descriptions(settings: dict[str, Any], hook: Any) -> dict[str, BackendDescription]:
    """Every backend the installed plugins offer, by name.

    :param hook: the plugin manager's ``hook`` relay.
    :raises RuntimeError: if two plugins offer the same name (which one would win is not
        for the core to guess).
    """
    found: dict[str, BackendDescription] = {}
    for result in hook.modelreg_storage_backends(settings=settings):
        for description in result or ():
            if description.name in found:
                raise RuntimeError(
                    f"storage backend {description.name!r} is offered by two plugins; "
                    f"block one with modelreg.plugins.disabled"
                )
            found[description.name] = description
    return found


def get_blob_store(settings: dict[str, Any], hook: Any) -> IBlobStore:
    """Build the blob store that ``modelreg.storage`` names.

    :param settings: the application settings (the backend reads its own from them).
    :param hook: the plugin manager's ``hook`` relay.
    :raises RuntimeError: if no installed plugin offers that backend, or the object its
        factory builds does not provide :class:`~modelreg.interfaces.IBlobStore`.
    """
    name = active_backend(settings)
    descriptions = backend_descriptions(settings, hook)
    description = descriptions.get(name)
    if description is None:
        installed = ", ".join(sorted(descriptions)) or "none"
        raise RuntimeError(
            f"unknown storage backend {name!r}; installed backends: {installed} "
            f"(is the plugin not installed?)"
        )
    store = description.factory(settings)
    try:
        verifyObject(IBlobStore, store)
    except Invalid as exc:
        raise RuntimeError(
            f"storage backend {name!r} does not provide IBlobStore: {exc}"
        ) from exc
    if IDirectUploads.providedBy(store):  # an optional capability, checked when declared
        try:
            verifyObject(IDirectUploads, store)
        except Invalid as exc:
            raise RuntimeError(
                f"storage backend {name!r} does not provide IDirectUploads: {exc}"
            ) from exc
    log.info("storage backend %s (%s = %s): %s", name, STORAGE_SETTING, name,
             description.description or "no description")
    return store


def active_backend(settings: dict[str, Any]) -> str:
    """The name of the backend ``modelreg.storage`` selects (``local`` when unset)."""
    return (settings.get(STORAGE_SETTING) or DEFAULT_BACKEND).strip()


def _blob_store(request: Request) -> IBlobStore:
    return request.registry[REGISTRY_KEY]


def includeme(config: Configurator) -> None:
    """Build the configured blob store and make it ``request.blob_store``.

    Needs ``config.registry[keys.PLUGIN_MANAGER]``.  The store is also registered as
    the utility providing :class:`~modelreg.interfaces.IBlobStore`.
    """
    pm = config.registry[keys.PLUGIN_MANAGER]
    store = get_blob_store(config.get_settings(), pm.hook)
    config.registry[REGISTRY_KEY] = store
    config.registry.registerUtility(store, IBlobStore)
    config.add_request_method(_blob_store, "blob_store", reify=True)
