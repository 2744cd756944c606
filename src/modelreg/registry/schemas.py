"""Request and response bodies of the registry API, declared once.

Request bodies are parsed with these classes; responses are built as plain dicts by the
renderers of :mod:`modelreg.registry.documents` and described by these classes in the
OpenAPI document (the test suite checks every response against that document).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..names import ALIAS_MAX, MAX_NUMBER, MODEL_NAME_MAX, TAG_VALUE_MAX
from ..openapi import Body

DESCRIPTION_MAX = 10_000
Status = Literal["draft", "validating", "ready", "rejected", "archived"]


# ----------------------------------------------------------------------------- requests


class ModelCreate(Body):
    """Body of ``POST /api/v1/models``."""

    name: str = Field(max_length=MODEL_NAME_MAX * 2, description="A URL-safe slug.")
    description: str = Field("", max_length=DESCRIPTION_MAX)
    tags: dict[str, str] = Field(default_factory=dict, max_length=100)


class ModelUpdate(Body):
    """Body of ``PATCH /api/v1/models/{model}``: the fields to change."""

    name: str | None = Field(None, max_length=MODEL_NAME_MAX * 2, description="Rename.")
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)


class Lineage(BaseModel):
    """Where a version came from.  Extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    run_id: str | None = Field(None, max_length=255)
    source_commit: str | None = Field(None, max_length=255)
    dataset_digests: list[str] = Field(default_factory=list, max_length=100)
    parent_version: int | None = Field(None, ge=1, le=MAX_NUMBER)


class VersionCreate(Body):
    """Body of ``POST /api/v1/models/{model}/versions``: a new draft."""

    description: str = Field("", max_length=DESCRIPTION_MAX)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free JSON: framework, metrics, params, signature."
    )
    lineage: Lineage = Field(default_factory=Lineage)
    tags: dict[str, str] = Field(default_factory=dict, max_length=100)


class VersionUpdate(Body):
    """Body of ``PATCH .../versions/{n}``; ``metadata`` and ``lineage`` only while draft."""

    description: str | None = Field(None, max_length=DESCRIPTION_MAX)
    metadata: dict[str, Any] | None = None
    lineage: Lineage | None = None


class TagSet(Body):
    """Body of ``PUT .../tags/{key}``."""

    value: str = Field(max_length=TAG_VALUE_MAX)


class AliasSet(Body):
    """Body of ``PUT /api/v1/models/{model}/aliases/{alias}``."""

    version: int = Field(ge=1, le=MAX_NUMBER, description="The number of a ready version.")


# ---------------------------------------------------------------------------- responses


class ModelOut(BaseModel):
    """A model."""

    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int] = Field(description="Alias name -> version number.")
    latest_version: int | None = Field(
        description="Number of the newest ready version (what `@latest` resolves to), if any; "
        "drafts and versions being validated are not counted.")
    created_at: dt.datetime
    updated_at: dt.datetime
    created_by: str | None
    updated_by: str | None


class ModelList(BaseModel):
    """A page of models."""

    models: list[ModelOut]
    next_page_token: str | None


class ProblemOut(BaseModel):
    """A rule a model or version breaks."""

    code: str
    message: str
    field: str | None


class VersionOut(BaseModel):
    """A version of a model."""

    model: str
    number: int
    status: Status
    description: str
    metadata: dict[str, Any]
    lineage: dict[str, Any]
    tags: dict[str, str]
    aliases: list[str]
    digest: str | None
    problems: list[ProblemOut] | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finalized_at: dt.datetime | None
    created_by: str | None
    updated_by: str | None


class FinalizeOut(VersionOut):
    """The answer of finalize: the version, and while it is ``validating`` (202) a notice
    when no worker has been seen to run its scan."""

    notice: str | None = Field(
        None, description="Why the version may stay validating: no worker has been seen "
        "recently (modelreg.worker.stale_after), with what to do about it.")


class VersionList(BaseModel):
    """A page of versions."""

    versions: list[VersionOut]
    next_page_token: str | None


class AliasOut(BaseModel):
    """An alias and the version it points at."""

    model: str
    alias: str = Field(max_length=ALIAS_MAX)
    version: int
    updated_at: dt.datetime
    updated_by: str | None


class AliasList(BaseModel):
    """The aliases of a model."""

    aliases: list[AliasOut]


class AliasMove(BaseModel):
    """One move of an alias; ``None`` on one side means set for the first time or deleted."""

    alias: str
    from_version: int | None
    to_version: int | None
    actor: str | None
    at: dt.datetime


class AliasHistoryOut(BaseModel):
    """The moves of an alias, newest first."""

    model: str
    alias: str
    history: list[AliasMove]
    next_page_token: str | None


class TagOut(BaseModel):
    """A tag."""

    key: str
    value: str


class Health(BaseModel):
    """Answer of ``/healthz`` and ``/readyz``."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(
        default_factory=list, description="What an operator should know that does not make the "
        "process unready, e.g. jobs waiting with no worker seen to run them; absent when none.")


class OpenAPIDocument(BaseModel):
    """An OpenAPI 3.1 document (this one)."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
