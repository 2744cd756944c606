"""The registry: models, versions, aliases and tags (:mod:`.services`), their search
language (:mod:`.filters`), retention (:mod:`.retention`) and their REST API (:mod:`.views`).
"""

from __future__ import annotations

from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    """``request.registry_service`` (owned here, used by every package's views), the
    retention job kind, and the registry API."""
    config.add_request_method("modelreg.registry.requests.registry_service",
                              "registry_service", reify=True)
    config.include(".retention")
    config.include(".views")
