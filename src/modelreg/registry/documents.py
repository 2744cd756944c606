"""The API representation of each registry resource, rendered in one place each.

Whatever a document is read from — ORM objects loaded in the session
(:meth:`~modelreg.registry.queries.RegistryQueries.model_json`), or plain rows of one
statement (``model_document_of``, ``version_document``, ``alias_document``, the list pages)
— it goes through the one function here for its resource, so the shapes cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..models import isotime


def model_document(
    *,
    name: str,
    description: str,
    tags: dict[str, str],
    aliases: dict[str, int],
    latest: int | None,
    created_at: dt.datetime,
    updated_at: dt.datetime,
    created_by: str | None,
    updated_by: str | None,
) -> dict[str, Any]:
    """The API representation of a model, from its fields."""
    return {
        "name": name,
        "description": description,
        "tags": tags,
        "aliases": aliases,
        "latest_version": latest,
        "created_at": isotime(created_at),
        "updated_at": isotime(updated_at),
        "created_by": created_by,
        "updated_by": updated_by,
    }


def version_document(
    version: Any, *, model: str, metadata: Any, tags: dict[str, str], aliases: list[str]
) -> dict[str, Any]:
    """The API representation of a version from its row (an ORM object or a result row),
    its model's name and its ``metadata`` document (``metadata_`` on the ORM object)."""
    return {
        "model": model,
        "number": version.number,
        "status": version.status,
        "description": version.description,
        "metadata": metadata,
        "lineage": version.lineage,
        "tags": tags,
        "aliases": aliases,
        "digest": version.digest,
        "problems": version.problems,
        "created_at": isotime(version.created_at),
        "updated_at": isotime(version.updated_at),
        "finalized_at": isotime(version.finalized_at),
        "created_by": version.created_by,
        "updated_by": version.updated_by,
    }


def alias_document(
    *, model: str, alias: str, version: int, updated_at: dt.datetime, updated_by: str | None
) -> dict[str, Any]:
    """The API representation of an alias, from its fields."""
    return {
        "model": model,
        "alias": alias,
        "version": version,
        "updated_at": isotime(updated_at),
        "updated_by": updated_by,
    }
