"""The registry's domain logic: models, versions, tags and aliases.

Views parse requests and call :class:`RegistryService`; so do the files and scanning
packages, the worker's job handlers, the CLI and the plugin facade
(:mod:`modelreg.plugin_api`).  It is split by responsibility (docs/architecture.md):

* :mod:`modelreg.registry.queries` — the reads (:class:`RegistryQueries`);
* :mod:`modelreg.registry.commands` — the writes, each audited and sent to the outbox in
  the change's transaction (:class:`RegistryCommands`, which extends the reads);
* :mod:`modelreg.registry.documents` — the one renderer per resource (model, version, alias)
  that every read and write returns its documents through.

:class:`RegistryService` is the name callers use: both halves over one session.
"""

from __future__ import annotations

from ..models import isotime
from .commands import MAX_DOCUMENT_BYTES, RegistryCommands, manifest_digest
from .queries import (
    MODEL_ORDERS,
    RegistryQueries,
    alias_not_found,
    ref_kind,
    version_not_found,
    version_number,
    with_children,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MODEL_ORDERS",
    "RegistryCommands",
    "RegistryQueries",
    "RegistryService",
    "alias_not_found",
    "isotime",
    "manifest_digest",
    "ref_kind",
    "version_not_found",
    "version_number",
    "with_children",
]


class RegistryService(RegistryCommands):
    """Models, versions, tags and aliases, for one request (or one script transaction): the
    reads of :class:`RegistryQueries` and the writes of :class:`RegistryCommands`.

    :param dbsession: a session joined to the current transaction.
    :param hook: the plugin manager's hook relay (``pm.hook``).
    :param settings: the application settings.
    :param actor: who is acting (principal name), recorded on every change.
    :param client_addr: the client's address, recorded in the audit log.
    :param token_id: the public id of the API token the actor used, recorded in the audit log.
    """
