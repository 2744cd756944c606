"""The registry's domain logic: models, versions, tags and aliases.

Views parse requests and call :class:`RegistryService`; the service reads and writes through
the request's session (committed or aborted by pyramid_tm, never here), asks the validation
hooks, and records every mutation as an audit event and an outbox event in the same
transaction as the change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import uuid
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager, selectinload

from .. import paging
from ..db import mark_changed
from ..errors import Conflict, NotFound, Unprocessable
from ..jobs import enqueue
from ..models import (
    Alias,
    AliasHistory,
    AuditEvent,
    File,
    Model,
    ModelTag,
    OutboxEvent,
    Version,
    VersionTag,
    isotime,
    utcnow,
)
from ..names import (
    DIGEST_PREFIX,
    LATEST,
    check_alias,
    check_model_name,
    check_tag,
    has_control,
    is_number,
    normalize_name,
    parse_number,
)
from ..policy import (
    ARCHIVED,
    RETENTION_JOB,
    PolicyRules,
    check_new_version,
    policy_rules,
    refusal,
    retention_victims,
    size_problems,
)
from ..scanning import SCAN_JOB, file_count_problems, has_scanners
from ..validation import validate_alias, validate_model, validate_version
from . import documents, filters
from .documents import model_document, version_document
from .errors import model_not_found

#: Largest serialised size of a version's ``metadata`` or ``lineage``.
MAX_DOCUMENT_BYTES = 64 * 1024


def version_not_found(model: str, ref: str, aliases: list[str] | None = None) -> NotFound:
    """The answer for a version ref that names no version of the model ``model``; for a ref
    that would be an alias, ``aliases`` are the ones the model has (told in the message and
    in ``details.aliases``)."""
    details: dict[str, Any] = {"model": model, "version": ref}
    message = f"model {model!r} has no version {ref!r}"
    if aliases is not None:
        details["aliases"] = aliases
        message += f" (no such alias; its aliases: {', '.join(aliases) or 'none'})"
    return NotFound(message, code="version_not_found", details=details)


def alias_not_found(model: str, name: str, aliases: list[str],
                    suffix: str = "") -> NotFound:
    """The answer for an alias the model ``model`` does not have, naming those it has."""
    return NotFound(
        f"model {model!r} has no alias {name!r}{suffix} "
        f"(its aliases: {', '.join(aliases) or 'none'})",
        code="alias_not_found",
        details={"model": model, "alias": name, "aliases": aliases},
    )


def ref_kind(ref: str) -> tuple[str, Any]:
    """What a version ref names, and the value to look it up by: ``("number", n)``,
    ``("latest", None)``, ``("digest", ref)``, ``("alias", ref)``, or ``("none", None)`` for a
    number beyond any that can exist."""
    if is_number(ref):
        number = parse_number(ref)
        return ("number", number) if number is not None else ("none", None)
    if ref == LATEST:
        return "latest", None
    if ref.startswith(DIGEST_PREFIX):
        return "digest", ref
    return "alias", ref


def _resolve_ref(query: Any, kind: str, value: Any, model_id: Any) -> Any:
    """``query`` (over ``Version``) narrowed to the version named by a ref of ``kind`` (see
    :func:`ref_kind`) and ``value`` (a value or a bound parameter), of the model whose id is
    ``model_id`` (a value or a column).  Take its first row."""
    query = query.where(Version.model_id == model_id)
    if kind == "number":
        return query.where(Version.number == value)
    if kind == "id":  # not a ref: the version's row id, for documents of known versions
        return query.where(Version.id == value)
    if kind == "latest":
        return query.where(Version.status == "ready").order_by(Version.number.desc())
    if kind == "digest":
        return query.where(Version.status == "ready", Version.digest == value).order_by(
            Version.number
        )
    if kind == "alias":
        return query.join(Alias, Alias.version_id == Version.id).where(
            Alias.model_id == model_id, Alias.name == value
        )
    return query.where(sa.false())


@functools.cache
def _model_statement(lock: bool) -> Any:
    """The statement of :meth:`RegistryService.get_model` (parameter ``name``, normalized),
    built once (with and without ``FOR UPDATE``)."""
    query = sa.select(Model).where(Model.normalized_name == sa.bindparam("name"))
    return query.with_for_update() if lock else query


@functools.cache
def _version_statement(kind: str) -> Any:
    """The statement of :meth:`RegistryService.get_version` for refs of ``kind``, with the
    parameters ``model`` (the normalized name) and ``value``, built once per kind."""
    return _resolve_ref(
        sa.select(Version)
        .join(Model, Model.id == Version.model_id)
        .where(Model.normalized_name == sa.bindparam("model"))
        .options(contains_eager(Version.model)),
        kind,
        sa.bindparam("value"),
        Model.id,
    ).limit(1)


@functools.cache
def _version_document_statement(kind: str) -> Any:
    """The statement of :meth:`RegistryService.version_document` for refs of ``kind``, with
    the parameters ``model`` (the normalized name) and ``value``.  Built once per kind:
    constructing a statement of this size costs SQLAlchemy more CPU than running it."""
    found = _resolve_ref(
        sa.select(
            Version.id, Model.name.label("model"), Version.number, Version.status,
            Version.description, Version.metadata_.label("metadata"), Version.lineage,
            Version.digest, Version.problems, Version.created_at, Version.updated_at,
            Version.finalized_at, Version.created_by, Version.updated_by,
        )
        .join(Model, Model.id == Version.model_id)
        .where(Model.normalized_name == sa.bindparam("model")),
        kind,
        sa.bindparam("value"),
        Model.id,
    ).limit(1).cte("found")
    return with_children(found, [
        sa.select(VersionTag.version_id, VersionTag.key, VersionTag.value, sa.null())
        .join(found, found.c.id == VersionTag.version_id),
        sa.select(Alias.version_id, Alias.name, sa.null(), sa.null())
        .join(found, found.c.id == Alias.version_id),
    ])


@functools.cache
def _alias_document_statement() -> Any:
    """The statement of :meth:`RegistryService.alias_document` (parameters ``model``, the
    normalized name, and ``alias``), built once."""
    return (
        sa.select(Model.name, Alias.name.label("alias"), Version.number, Alias.updated_at,
                  Alias.updated_by)
        .join(Alias, Alias.model_id == Model.id)
        .join(Version, Version.id == Alias.version_id)
        .where(Model.normalized_name == sa.bindparam("model"),
               Alias.name == sa.bindparam("alias"))
    )


def manifest_digest(files: Iterable[dict[str, Any]]) -> str:
    """The version digest: sha256 of the canonical manifest (docs/api.md).

    The manifest is the UTF-8 JSON of ``[{"path", "sha256", "size"}, ...]`` sorted by path,
    with sorted keys and no spaces, so that the server and any client compute the same value.
    """
    entries = sorted(
        ({"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files),
        key=lambda entry: entry["path"],
    )
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return DIGEST_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_document(name: str, value: dict[str, Any]) -> None:
    if len(json.dumps(value, separators=(",", ":"))) > MAX_DOCUMENT_BYTES:
        raise Unprocessable(
            f"{name} is too large: at most {MAX_DOCUMENT_BYTES} bytes of JSON",
            code="document_too_large",
            details={"field": name, "max_bytes": MAX_DOCUMENT_BYTES},
        )


def _check_tags(tags: dict[str, str]) -> None:
    for key, value in tags.items():
        check_tag(key, value)


def version_number(ref: str) -> int | None:
    """The version number a write request names (``None`` for a number beyond any that can
    exist); 422 for an alias, a digest or zero."""
    if not is_number(ref) or not ref.strip("0"):
        raise Unprocessable(
            f"write requests name a version by its number, not {ref[:100]!r}",
            code="invalid_version_number",
            details={"field": "version"},
        )
    return parse_number(ref)


def with_children(parent: Any, children: Iterable[Any]) -> Any:
    """One statement for a CTE of rows and the rows related to them (tags, aliases).

    ``parent`` is a CTE whose first column is ``id``; each of ``children`` is a SELECT of
    exactly four columns — the parent's id, a key, a string value, a number (``NULL``
    where it has none) — that joins ``parent``.  The result is a ``UNION ALL`` of the
    parent rows (``kind`` 0, with ``child_key``, ``child_value``, ``child_number`` NULL) and
    each child's rows (``kind`` 1, 2, … in the order given, the parent's id in ``id``, the
    other parent columns NULL): one round trip instead of one query per relation, and no
    list of ids bound parameter by parameter.  Rows come in no particular order.
    """
    columns = list(parent.c)
    # The first branch types the columns (PostgreSQL resolves a UNION's types pairwise, and
    # two untyped NULLs would make text, which no integer then matches); the NULLs of the
    # other branches take those types.
    parts = [sa.select(sa.literal_column("0", sa.Integer()).label("kind"), *columns,
                       sa.cast(sa.null(), sa.String()).label("child_key"),
                       sa.cast(sa.null(), sa.String()).label("child_value"),
                       sa.cast(sa.null(), sa.Integer()).label("child_number"))]
    blanks = [sa.null()] * (len(columns) - 1)
    for kind, child in enumerate(children, start=1):
        owner, key, value, number = child.selected_columns
        parts.append(child.with_only_columns(
            sa.literal_column(str(kind), sa.Integer()), owner, *blanks, key, value, number,
            maintain_column_froms=True,
        ))
    return sa.union_all(*parts)


def _expire_unloaded(db: Session, owner: Any, collection: str) -> None:
    """Forget ``owner.<collection>`` if it was loaded, so that it is read again (with a row
    added behind its back) the next time it is used; nothing to do, and no query, if not."""
    if collection not in sa.inspect(owner).unloaded:
        db.expire(owner, [collection])


#: The orders of model lists, by name.
MODEL_ORDERS = {"name": Model.normalized_name, "created": Model.created_at,
                "updated": Model.updated_at}
#: Where a row of :func:`_models_page_statement` holds the key of each order (the id, the
#: tie-break, is at 1), and the key of a tag or an alias.
_PAGE_ORDER_INDEX = {"name": 3, "created": 5, "updated": 6}
_CHILD_KEY_INDEX = 10


@functools.lru_cache(maxsize=256)
def _models_page_statement(
    filter_text: str | None, order_name: str, descending: bool, after: bool,
    visible: Any | None = None,
) -> Any:
    """The statement of a page of models, with the parameters ``page_limit`` and, when
    ``after``, ``after_value`` and ``after_id`` (the page token's key).

    One statement, plain rows: a page is read, rendered and forgotten.  The page (with each
    model's latest version number) is a CTE, and its models' tags and aliases follow it in
    the same result through UNION ALL (:func:`with_children`), so that a page costs one
    round trip and binds no list of ids (100 ids bound one by one cost more CPU than the
    query).  Kept per filter text and order when ``visible`` is ``None`` (callers who may
    read every model): building and compiling a statement of this size costs SQLAlchemy
    more CPU than running it.

    :raises BadRequest: for an invalid filter.
    """
    order = paging.Order(order_name, MODEL_ORDERS[order_name], descending, Model.id)
    query = _model_rows()
    if filter_text:
        query = query.where(filters.model_filter(filter_text))
    if visible is not None:
        query = query.where(visible)
    if after:
        query = query.where(order.after([
            sa.bindparam("after_value", type_=order.column.type),
            sa.bindparam("after_id", type_=sa.Integer()),
        ]))
    return _with_tags_and_aliases(
        query.order_by(*order.clauses())
        .limit(sa.bindparam("page_limit", type_=sa.Integer()))
        .cte("page")
    )


def _model_rows() -> Any:
    """The columns of model documents: a model's row with its latest version number (the
    newest ready version, what ``@latest`` resolves to)."""
    latest = (
        sa.select(sa.func.max(Version.number))
        .where(Version.model_id == Model.id, Version.status == "ready")
        .scalar_subquery()
    )
    return sa.select(
        Model.id, Model.name, Model.normalized_name, Model.description,
        Model.created_at, Model.updated_at, Model.created_by, Model.updated_by,
        latest.label("latest_version"),
    )


def _with_tags_and_aliases(models: Any) -> Any:
    """A CTE of :func:`_model_rows` with its models' tags and aliases (:func:`with_children`)."""
    return with_children(models, [
        sa.select(ModelTag.model_id, ModelTag.key, ModelTag.value, sa.null())
        .join(models, models.c.id == ModelTag.model_id),
        sa.select(Alias.model_id, Alias.name, sa.null(), Version.number)
        .join(models, models.c.id == Alias.model_id)
        .join(Version, Version.id == Alias.version_id),
    ])


@functools.cache
def _model_document_statement() -> Any:
    """One model's document (parameter ``id``) in one statement, built once."""
    return _with_tags_and_aliases(_model_rows().where(Model.id == sa.bindparam("id")).cte("one"))


def _model_documents(rows: Iterable[Any]) -> dict[int, dict[str, Any]]:
    """The documents of the models in ``rows`` of :func:`_with_tags_and_aliases`, by id, in
    the order their rows come.  By position, not by name: at 100 models and their tags a
    page, attribute lookups by name are a measurable share of the request."""
    documents: dict[int, dict[str, Any]] = {}
    children = []
    for row in rows:
        if row[0]:
            children.append(row)
            continue
        (_, model_id, name, _, description, created_at, updated_at, created_by, updated_by,
         latest, *_) = row
        documents[model_id] = model_document(
            name=name, description=description, tags={}, aliases={}, latest=latest,
            created_at=created_at, updated_at=updated_at, created_by=created_by,
            updated_by=updated_by,
        )
    children.sort(key=operator.itemgetter(_CHILD_KEY_INDEX))
    for kind, model_id, *_, key, value, number in children:
        document = documents.get(model_id)
        if document is None:  # a model left out of the page (the extra one that says "more")
            continue
        if kind == 1:
            document["tags"][key] = value
        else:
            document["aliases"][key] = number
    return documents


#: The statements of :meth:`RegistryService.record` (Core: see there).
_AUDIT_INSERT = AuditEvent.__table__.insert()
_OUTBOX_INSERT = OutboxEvent.__table__.insert()


class RegistryService:
    """Models, versions, tags and aliases, for one request (or one script transaction).

    :param dbsession: a session joined to the current transaction.
    :param hook: the plugin manager's hook relay (``pm.hook``).
    :param settings: the application settings.
    :param actor: who is acting (principal name), recorded on every change.
    :param client_addr: the client's address, recorded in the audit log.
    :param token_id: the public id of the API token the actor used, recorded in the audit log.
    """

    def __init__(
        self,
        dbsession: Session,
        hook: Any,
        settings: dict[str, Any],
        actor: str | None = None,
        client_addr: str | None = None,
        token_id: str | None = None,
    ) -> None:
        self.db = dbsession
        self.hook = hook
        self.settings = settings
        self.actor = actor
        self.client_addr = client_addr
        self.token_id = token_id

    @cached_property
    def policy(self) -> PolicyRules:
        """The policy settings (:mod:`modelreg.policy`)."""
        return policy_rules(self.settings)

    # --------------------------------------------------------------------- recording

    def record(
        self,
        action: str,
        target_type: str,
        target: str,
        model: str | None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Write the audit event and the outbox event of one mutation.

        As INSERT statements of the tables, at once, rather than objects for the session's
        next flush: nothing reads them back, and the unit of work (or an ORM insert) costs
        five times the CPU of the plain statement (0.4 against 0.08 ms for the two).  The
        session is marked changed, so that its transaction commits even where nothing else
        was flushed.
        """
        now = utcnow()
        self.db.execute(_AUDIT_INSERT, {
            "at": now,
            "actor": self.actor,
            "action": action,
            "target_type": target_type,
            "target": target,
            "before": before,
            "after": after,
            "client_addr": self.client_addr,
            "token_id": self.token_id,
        })
        self.db.execute(_OUTBOX_INSERT, {
            "event_id": str(uuid.uuid4()),
            "type": action,
            "model": model,
            "payload": {"target": target, "actor": self.actor, "before": before,
                        "after": after},
            "created_at": now,
        })
        mark_changed(self.db)

    # ------------------------------------------------------------------------ models

    def model_json(self, model: Model, latest: int | None = None) -> dict[str, Any]:
        """The API representation of ``model``."""
        return model_document(
            name=model.name,
            description=model.description,
            tags={tag.key: tag.value for tag in model.tags},
            aliases={alias.name: alias.version.number for alias in model.aliases},
            latest=latest if latest is not None else self._latest_number(model),
            created_at=model.created_at,
            updated_at=model.updated_at,
            created_by=model.created_by,
            updated_by=model.updated_by,
        )

    def _latest_number(self, model: Model) -> int | None:
        """The newest ready version's number: the one ``@latest`` resolves to."""
        return self.db.scalar(sa.select(sa.func.max(Version.number)).where(
            Version.model_id == model.id, Version.status == "ready"))

    def get_model(self, name: str, *, lock: bool = False) -> Model:
        """The model called ``name`` (compared normalized), or 404.

        :param lock: lock the model's row for the rest of the transaction, which serializes
            changes to its aliases.
        """
        model = self.db.scalar(_model_statement(lock), {"name": normalize_name(name)})
        if model is None:
            raise model_not_found(name)
        return model

    def _check_name_free(self, name: str, normalized: str) -> None:
        existing = self.db.scalar(sa.select(Model.name).where(Model.normalized_name == normalized))
        if existing is not None:
            same = existing == name
            raise Conflict(
                f"model {existing!r} already exists"
                if same
                else f"model name {name!r} is too similar to the existing model {existing!r}",
                code="model_exists",
                details={"model": name, "existing": existing},
            )

    def _validate_model(self, model: dict[str, Any], previous: dict[str, Any] | None) -> None:
        problems = validate_model(self.hook, model, previous, self.settings)
        if problems:
            raise Unprocessable(
                f"model {model['name']!r} breaks {len(problems)} rule(s): "
                + "; ".join(p.message for p in problems),
                code="validation_failed",
                details={"problems": [p.as_json() for p in problems]},
            )

    def _flush_unique(self, name: str) -> None:
        # Two requests may pass the existence check at once; the unique index decides.
        try:
            self.db.flush()
        except IntegrityError as exc:
            raise Conflict(
                f"model name {name!r} is already taken",
                code="model_exists",
                details={"model": name},
            ) from exc

    def create_model(self, name: str, description: str, tags: dict[str, str]) -> Model:
        """Create a model; 409 if the name or a look-alike of it exists, 422 if invalid."""
        if has_control(name):
            check_model_name(name)
        normalized = normalize_name(name)
        self._check_name_free(name, normalized)
        check_model_name(name)
        _check_tags(tags)
        self._validate_model(
            {"name": name, "description": description, "tags": tags}, previous=None
        )
        now = utcnow()
        model = Model(
            name=name,
            normalized_name=normalized,
            description=description,
            next_version=1,
            created_at=now,
            updated_at=now,
            created_by=self.actor,
            updated_by=self.actor,
            tags=[ModelTag(key=k, value=v) for k, v in sorted(tags.items())],
            aliases=[],
        )
        self.db.add(model)
        self._flush_unique(name)
        self.record("model.created", "model", name, name,
                    after={"description": description, "tags": tags})
        return model

    def update_model(
        self, name: str, *, new_name: str | None = None, description: str | None = None
    ) -> Model:
        """Rename a model and/or change its description."""
        model = self.get_model(name, lock=True)
        before = {"name": model.name, "description": model.description}
        proposed = {
            "name": new_name if new_name is not None else model.name,
            "description": description if description is not None else model.description,
            "tags": {t.key: t.value for t in model.tags},
        }
        renamed = new_name is not None and new_name != model.name
        if renamed:
            if has_control(new_name):
                check_model_name(new_name)
            normalized = normalize_name(new_name)
            if normalized != model.normalized_name:
                self._check_name_free(new_name, normalized)
            check_model_name(new_name)
        self._validate_model(proposed, previous={**before, "tags": proposed["tags"]})
        if renamed:
            model.name = new_name
            model.normalized_name = normalize_name(new_name)
        if description is not None:
            model.description = description
        self._touch(model)
        self._flush_unique(model.name)
        after = {"name": model.name, "description": model.description}
        if after != before:
            self.record("model.renamed" if renamed else "model.updated", "model", model.name,
                        model.name, before=before, after=after)
        return model

    def delete_model(self, name: str) -> None:
        """Delete a model with its versions, tags, aliases and alias history."""
        model = self.get_model(name, lock=True)
        versions = self.db.scalar(
            sa.select(sa.func.count()).select_from(Version).where(Version.model_id == model.id)
        )
        self.db.delete(model)
        self.record("model.deleted", "model", model.name, model.name,
                    before={"name": model.name, "versions": versions})

    def _touch(self, model: Model) -> None:
        model.updated_at = utcnow()
        model.updated_by = self.actor

    def list_models(
        self,
        *,
        filter_text: str | None,
        order_by: str | None,
        page_size: str | None,
        page_token: str | None,
        visible: Any | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of models matching ``filter_text``, and the token of the next page.

        :param visible: SQL limiting the models to those the caller may see (``None``: all).
        """
        order = paging.parse_order(order_by, MODEL_ORDERS, Model.id, default="name")
        size = paging.parse_page_size(page_size)
        query_id = paging.fingerprint("models", filter_text, order.name, str(order.descending))
        key = paging.decode_token(page_token, query_id, order)
        build = _models_page_statement if visible is None else _models_page_statement.__wrapped__
        statement = build(filter_text or None, order.name, order.descending, key is not None,
                          visible)
        params: dict[str, Any] = {"page_limit": size + 1}
        if key is not None:
            params["after_value"], params["after_id"] = key
        rows = self.db.execute(statement, params).all()
        page_rows = [row for row in rows if not row[0]]
        # The CTE chose the rows in the database's order; a UNION ALL keeps no order, so the
        # page is sorted again here, by the same key (normalized names are ASCII: code-point
        # order is the byte order every backend uses for them, see migration 0007).
        page_rows.sort(key=operator.itemgetter(_PAGE_ORDER_INDEX[order.name], 1),
                       reverse=order.descending)
        page, more = page_rows[:size], len(page_rows) > size
        documents = _model_documents([*page, *(row for row in rows if row[0])])
        token = None
        if more:
            last = page[-1]
            token = paging.encode_token(
                [last[_PAGE_ORDER_INDEX[order.name]], last[1]], query_id)
        return list(documents.values()), token

    def set_model_tag(self, name: str, key: str, value: str) -> Model:
        """Set a tag on a model (create or replace)."""
        check_tag(key, value)
        model = self.get_model(name, lock=True)
        tag = self.db.get(ModelTag, (model.id, key))
        before = None if tag is None else {"value": tag.value}
        if tag is None:
            self.db.add(ModelTag(model_id=model.id, key=key, value=value))  # as for versions
            _expire_unloaded(self.db, model, "tags")
        else:
            tag.value = value
        self._touch(model)
        self.record("model.tag_set", "model_tag", f"{model.name}:{key}", model.name,
                    before=before, after={"value": value})
        return model

    def delete_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a model; 404 if it has no such tag."""
        model = self.get_model(name, lock=True)
        tag = self.db.get(ModelTag, (model.id, key))
        if tag is None:
            raise NotFound(f"model {model.name!r} has no tag {key!r}", code="tag_not_found",
                           details={"model": model.name, "key": key})
        model.tags.remove(tag)
        self._touch(model)
        self.record("model.tag_deleted", "model_tag", f"{model.name}:{key}", model.name,
                    before={"value": tag.value})

    # ---------------------------------------------------------------------- versions

    def version_json(self, version: Version) -> dict[str, Any]:
        """The API representation of ``version``."""
        return version_document(
            version,
            model=version.model.name,
            metadata=version.metadata_,
            tags={tag.key: tag.value for tag in version.tags},
            aliases=[alias.name for alias in version.aliases],
        )

    def create_version(
        self,
        model_name: str,
        *,
        description: str,
        metadata: dict[str, Any],
        lineage: dict[str, Any],
        tags: dict[str, str],
    ) -> Version:
        """Create a draft version numbered from the model's counter.

        The counter is incremented with an ``UPDATE`` on the model's row, which locks it for
        the rest of the transaction: concurrent creators queue there and each reads back its
        own number, so numbers have no gaps and no duplicates and are never reused (the
        unique constraint on (model, number) is the last guard).
        """
        _check_document("metadata", metadata)
        _check_document("lineage", lineage)
        _check_tags(tags)
        model = self.get_model(model_name)
        parent = lineage.get("parent_version")
        if parent is not None and self._find_version(model, parent) is None:
            raise Unprocessable(
                f"lineage.parent_version {parent} is not a version of {model.name!r}",
                code="invalid_lineage",
                details={"field": "lineage.parent_version"},
            )
        models = Model.__table__
        self.db.execute(
            sa.update(models)
            .where(models.c.id == model.id)
            .values(next_version=models.c.next_version + 1)
        )
        number = self.db.scalar(
            sa.select(models.c.next_version).where(models.c.id == model.id)
        ) - 1
        # The update above locked the model's row: concurrent creators count one by one.
        check_new_version(self.db, self.settings, model)
        now = utcnow()
        version = Version(
            model=model,
            number=number,
            status="draft",
            description=description,
            metadata_=metadata,
            lineage=lineage,
            created_at=now,
            updated_at=now,
            created_by=self.actor,
            updated_by=self.actor,
            tags=[VersionTag(key=k, value=v) for k, v in sorted(tags.items())],
        )
        self.db.add(version)
        self.db.flush()
        self.record("version.created", "version", f"{model.name}/{number}", model.name,
                    after={"number": number, "tags": tags})
        return version

    def _find_version(self, model: Model, number: int) -> Version | None:
        return self.db.scalar(
            sa.select(Version).where(Version.model_id == model.id, Version.number == number)
        )

    def get_version(self, model_name: str, ref: str) -> Version:
        """Resolve ``ref`` of a model: a number, an alias, ``latest`` or ``sha256:<hex>``."""
        # One statement: the version with its model (contains_eager fills Version.model from
        # the join); the model is looked up on its own only to tell which 404 to answer.
        kind, value = ref_kind(ref)
        version = self.db.scalars(
            _version_statement(kind), {"model": normalize_name(model_name), "value": value}
        ).first()
        if version is None:
            raise self._ref_not_found(model_name, ref)
        return version

    def _ref_not_found(self, model_name: str, ref: str) -> NotFound:
        """The 404 for a ref of an existing model (or the model's own 404): a ref that would
        be an alias names the aliases the model has."""
        model = self.get_model(model_name)
        if ref_kind(ref)[0] != "alias":
            return version_not_found(model.name, ref)
        return version_not_found(model.name, ref, self._alias_names(model))

    def _alias_names(self, model: Model) -> list[str]:
        return list(self.db.scalars(
            sa.select(Alias.name).where(Alias.model_id == model.id).order_by(Alias.name)))

    def version_document(self, model_name: str, ref: str) -> dict[str, Any]:
        """The API representation of the version ``ref`` of a model, for reading.

        What :meth:`get_version` and :meth:`version_json` give, in one statement of plain
        rows (the version with its model's name, its tags and its aliases) instead of four
        queries building ORM objects: the read path of ``GET .../versions/{ref}``.
        """
        document = self._version_document(normalize_name(model_name), *ref_kind(ref))
        if document is None:
            raise self._ref_not_found(model_name, ref)
        return document

    def _version_document(self, normalized: str, kind: str, value: Any) -> dict[str, Any] | None:
        rows = self.db.execute(
            _version_document_statement(kind), {"model": normalized, "value": value}
        ).all()
        version = next((row for row in rows if row.kind == 0), None)
        if version is None:
            return None
        children = sorted((row for row in rows if row.kind), key=lambda r: r.child_key)
        return version_document(
            version,
            model=version.model,
            metadata=version.metadata,
            tags={row.child_key: row.child_value for row in children if row.kind == 1},
            aliases=[row.child_key for row in children if row.kind == 2],
        )

    def version_document_of(self, version: Version) -> dict[str, Any]:
        """What :meth:`version_json` gives for ``version``, read in one statement (pending
        changes of the session are flushed first) instead of loading its tags and aliases
        into the session."""
        document = self._version_document(version.model.normalized_name, "id", version.id)
        if document is None:  # a version of this session: flushed, so there
            raise version_not_found(version.model.name, str(version.number))
        return document

    def model_document_of(self, model: Model) -> dict[str, Any]:
        """What :meth:`model_json` gives for ``model``, read in one statement (pending
        changes of the session are flushed first) instead of three."""
        rows = self.db.execute(_model_document_statement(), {"id": model.id}).all()
        return next(iter(_model_documents(rows).values()))

    def get_version_for_write(self, model_name: str, ref: str) -> Version:
        """The version a write request names by number, unlocked: for checks before a body
        is read (the write itself goes through :meth:`lock_version`)."""
        version_number(ref)
        return self.get_version(model_name, ref)

    def lock_version(
        self, model_name: str, ref: str, *, lock_model: bool = False,
        draft: tuple[str, str] | None = None,
    ) -> Version:
        """The version a write request names by number, its row locked until the
        transaction ends and read again under the lock: the one way every write to a
        version (its description, metadata, lineage, tags, files, finalize, deletion, an
        alias moved onto it) reaches its row.

        Finalizing holds the same lock while validation reads the version, so a write either
        lands before (and validation sees it) or after (and sees the finalized status: a
        draft-only write is then refused).  ``SELECT … FOR UPDATE`` on PostgreSQL and
        MariaDB; SQLite ignores it, and its writing transactions begin with ``BEGIN
        IMMEDIATE`` (:mod:`modelreg.db`), which serializes them whole.

        :param lock_model: lock the model's row first, as moving or deleting an alias does
            (:meth:`set_alias`): for writes that read or change the version's aliases.  The
            order is always model, then version, so the two kinds of writers never deadlock.
        :param draft: ``(code, message)``: unless the version is a draft (read under the
            lock), ``409 code`` with ``"version N is <status>: <message>"``.
        :raises NotFound: if the version does not exist, or was deleted meanwhile.
        """
        number = version_number(ref)
        if lock_model:
            model = self.get_model(model_name, lock=True)
            model_id, name = model.id, model.name
        else:
            found = self.get_version(model_name, ref)
            model_id, name = found.model_id, found.model.name
        # populate_existing: the row as it is now (under the lock), not as first read.
        version = self.db.scalars(
            sa.select(Version).where(Version.model_id == model_id, Version.number == number)
            .with_for_update().execution_options(populate_existing=True)
        ).first()
        if version is None:
            raise version_not_found(name, ref)
        if draft is not None and version.status != "draft":
            code, message = draft
            raise Conflict(
                f"version {version.number} is {version.status}: {message}",
                code=code,
                details={"status": version.status},
            )
        return version

    def list_versions(
        self,
        model_name: str,
        *,
        filter_text: str | None,
        order_by: str | None,
        page_size: str | None,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of a model's versions matching ``filter_text``, and the next page's token."""
        model = self.get_model(model_name)
        order = paging.parse_order(
            order_by,
            {"number": Version.number, "created": Version.created_at,
             "updated": Version.updated_at},
            Version.id,
            default="number desc",
        )
        size = paging.parse_page_size(page_size)
        query_id = paging.fingerprint(
            "versions", model.normalized_name, filter_text, order.name, str(order.descending)
        )
        query = (
            sa.select(Version)
            .where(Version.model_id == model.id)
            .options(selectinload(Version.tags), selectinload(Version.aliases))
        )
        if filter_text:
            query = query.where(filters.version_filter(filter_text))
        key = paging.decode_token(page_token, query_id, order)
        if key is not None:
            query = query.where(order.after(key))
        rows = self.db.scalars(query.order_by(*order.clauses()).limit(size + 1)).all()
        page, more = rows[:size], len(rows) > size
        token = None
        if more:
            last = page[-1]
            token = paging.encode_token([getattr(last, order.column.key), last.id], query_id)
        return [self.version_json(v) for v in page], token

    def update_version(
        self,
        model_name: str,
        ref: str,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> Version:
        """Change a version's description (any state) or metadata and lineage (drafts only)."""
        drafts_only = metadata is not None or lineage is not None
        version = self.lock_version(model_name, ref, draft=(
            "version_immutable", "only a draft's metadata and lineage can change",
        ) if drafts_only else None)
        before = {"description": version.description}
        if description is not None:
            version.description = description
        if metadata is not None:
            _check_document("metadata", metadata)
            before["metadata"] = version.metadata_
            version.metadata_ = metadata
        if lineage is not None:
            _check_document("lineage", lineage)
            before["lineage"] = version.lineage
            version.lineage = lineage
        version.updated_at = utcnow()
        version.updated_by = self.actor
        after = {"description": version.description}
        if metadata is not None:
            after["metadata"] = metadata
        if lineage is not None:
            after["lineage"] = lineage
        self.record("version.updated", "version", f"{version.model.name}/{version.number}",
                    version.model.name, before=before, after=after)
        return version

    def delete_version(
        self, model_name: str, ref: str, *, drop_aliases: Iterable[str] = ()
    ) -> list[str]:
        """Delete a version; its number is never reused.

        While an alias points at the version the answer is ``409 version_has_aliases``
        (naming them), unless ``drop_aliases`` names every one of them: those are then
        deleted first, each recorded as :meth:`delete_alias` records it (history, audit,
        outbox).  Names in ``drop_aliases`` that do not point at this version are left
        alone.  The model's row is locked first, then the version's, in the order moving an
        alias takes them (:meth:`set_alias`): no alias lands on a version being deleted.

        :returns: the aliases dropped, sorted.
        """
        version = self.lock_version(model_name, ref, lock_model=True)
        model = version.model
        aliases = self.db.scalars(
            sa.select(Alias).where(Alias.version_id == version.id).order_by(Alias.name)
        ).all()
        allowed = set(drop_aliases)
        kept = [alias.name for alias in aliases if alias.name not in allowed]
        if kept:
            names = [alias.name for alias in aliases]
            raise Conflict(
                f"version {version.number} is still the target of alias(es) "
                f"{', '.join(names)}: move or delete them first, or name them in "
                "drop_aliases",
                code="version_has_aliases",
                details={"model": model.name, "version": version.number, "aliases": names,
                         "not_dropped": kept},
            )
        now = utcnow()
        for alias in aliases:
            self.db.delete(alias)
            self.db.add(AliasHistory(model_id=model.id, alias=alias.name,
                                     from_version=version.number, to_version=None,
                                     actor=self.actor, at=now))
            self.record("alias.deleted", "alias", f"{model.name}@{alias.name}", model.name,
                        before={"version": version.number},
                        after={"reason": "version_deleted"})
        if aliases:
            self._touch(model)
            self.db.flush()
            _expire_unloaded(self.db, model, "aliases")
            self.queue_retention(model)
        self.db.delete(version)
        self.record("version.deleted", "version", f"{model.name}/{version.number}", model.name,
                    before={"number": version.number, "status": version.status})
        return [alias.name for alias in aliases]

    def files_json(self, version: Version) -> list[dict[str, Any]]:
        """The files of ``version`` as validators and scanners see them, sorted by path."""
        return [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "media_type": f.media_type}
            for f in self.db.scalars(
                sa.select(File).where(File.version_id == version.id).order_by(File.path))
        ]

    def finalize_version(self, model_name: str, ref: str) -> Version:
        """Run the validation hooks on a draft and make it ``ready`` or ``rejected``.

        All problems reported by every validator are stored on a rejected version.  A ready
        version is immutable: its digest (over the manifest of its files) never changes.
        When a plugin implements ``modelreg_scan_file`` and the validators found nothing,
        the version becomes ``validating`` instead and a scan job is queued in the same
        transaction; the worker concludes it (:mod:`modelreg.scanning.jobs`).
        """
        # The version's row stays locked while validation reads it: every other write to a
        # version takes the same lock (lock_version), so no file, metadata or tag changes
        # under the validators, and a draft-only write that waited sees the new status.
        version = self.lock_version(model_name, ref,
                                    draft=("version_not_draft", "only a draft is finalized"))
        files = self.files_json(version)
        if not files:
            raise Unprocessable(
                f"version {version.number} has no files: upload at least one before "
                "finalizing it",
                code="version_empty",
                details={"model": version.model.name, "version": version.number},
            )
        model_json = self.model_json(version.model)
        version_json = {**self.version_json(version), "files": files}
        problems = validate_version(self.hook, model_json, version_json, self.settings)
        # The size rules again: uploads are checked one by one, a limit may have been
        # lowered since, and concurrent uploads of different files may add up.
        problems += size_problems(self.db, self.policy, version, path=None, size=0,
                                  phase="finalize")[0]
        if has_scanners(self.hook):
            problems += file_count_problems(self.settings, files)
        now = utcnow()
        version.finalized_at = now
        if not problems and has_scanners(self.hook):
            version.status = "validating"
            version.updated_at = now
            version.updated_by = self.actor
            enqueue(self.db, SCAN_JOB, {"version_id": version.id})
            self.record("version.validating", "version",
                        f"{version.model.name}/{version.number}", version.model.name,
                        after={"status": "validating"})
            return version
        self.conclude_finalize(version, files, [p.as_json() for p in problems])
        return version

    def conclude_finalize(
        self, version: Version, files: list[dict[str, Any]], problems: list[dict[str, Any]]
    ) -> None:
        """Make a finalized version ``ready`` (with its digest) or ``rejected`` (with
        ``problems``), and record the event: the one place either happens, whether in the
        finalize request or in the worker after scanning.

        :param files: the version's files (``path``, ``size``, ``sha256``).
        :param problems: problems in the JSON shape of :meth:`Problem.as_json`.
        """
        now = utcnow()
        version.updated_at = now
        version.updated_by = self.actor
        target = f"{version.model.name}/{version.number}"
        if problems:
            version.status = "rejected"
            version.problems = problems
            self.record("version.rejected", "version", target, version.model.name,
                        after={"status": "rejected", "problems": version.problems})
        else:
            version.status = "ready"
            version.digest = manifest_digest(files)
            self.record("version.finalized", "version", target, version.model.name,
                        after={"status": "ready", "digest": version.digest})
            self.queue_retention(version.model)

    def set_version_tag(self, model_name: str, ref: str, key: str, value: str) -> Version:
        """Set a tag on a version (any state: tags annotate, they are not content)."""
        check_tag(key, value)
        version = self.lock_version(model_name, ref, lock_model=True)
        self._check_alias_targets(version, lambda tags: {**tags, key: value})
        tag = self.db.get(VersionTag, (version.id, key))
        before = None if tag is None else {"value": tag.value}
        if tag is None:
            # Added to the session, not appended to version.tags: that would load the whole
            # collection first, a query this request has no use for.
            self.db.add(VersionTag(version_id=version.id, key=key, value=value))
            _expire_unloaded(self.db, version, "tags")
        else:
            tag.value = value
        version.updated_at = utcnow()
        self.record("version.tag_set", "version_tag",
                    f"{version.model.name}/{version.number}:{key}", version.model.name,
                    before=before, after={"value": value})
        return version

    def delete_version_tag(self, model_name: str, ref: str, key: str) -> None:
        """Delete a tag of a version; 404 if it has no such tag."""
        version = self.lock_version(model_name, ref, lock_model=True)
        tag = self.db.get(VersionTag, (version.id, key))
        if tag is None:
            raise NotFound(
                f"version {version.number} of {version.model.name!r} has no tag {key!r}",
                code="tag_not_found",
                details={"key": key},
            )
        self._check_alias_targets(
            version, lambda tags: {k: v for k, v in tags.items() if k != key})
        version.tags.remove(tag)
        version.updated_at = utcnow()
        self.record("version.tag_deleted", "version_tag",
                    f"{version.model.name}/{version.number}:{key}", version.model.name,
                    before={"value": tag.value})

    def _check_alias_targets(
        self, version: Version, change: Callable[[dict[str, str]], dict[str, str]]
    ) -> None:
        """Refuse (422) the tags ``change`` makes of a version's tags when its aliases' rules
        would then refuse them (a protected alias's required tag, say).  The caller locked
        the model's row (:meth:`lock_version` with ``lock_model``), as moving an alias does,
        so that no alias lands on the version meanwhile.  The documents the rules see are
        read only when the version has an alias."""
        self.db.expire(version, ["aliases"])
        if not version.aliases:
            return
        model_json = self.model_document_of(version.model)
        before = self.version_document_of(version)
        after = {**before, "tags": change(before["tags"])}
        problems = []
        for alias in version.aliases:
            problems += validate_alias(self.hook, model_json, alias.name, after, before,
                                       self.settings)
        if problems:
            raise refusal(problems, f"the new tags of version {version.number} of "
                                    f"{version.model.name!r}")

    # ----------------------------------------------------------------------- aliases

    def alias_json(self, alias: Alias, model: Model) -> dict[str, Any]:
        """The API representation of ``alias``."""
        return documents.alias_document(
            model=model.name, alias=alias.name, version=alias.version.number,
            updated_at=alias.updated_at, updated_by=alias.updated_by)

    def _get_alias(self, model: Model, name: str) -> Alias:
        alias = self.db.get(Alias, (model.id, name))
        if alias is None:
            raise alias_not_found(model.name, name, self._alias_names(model))
        return alias

    def get_alias(self, model_name: str, name: str) -> tuple[Alias, Model]:
        """An alias of a model, or 404."""
        model = self.get_model(model_name)
        return self._get_alias(model, name), model

    def alias_document(self, model_name: str, name: str) -> dict[str, Any]:
        """The API representation of an alias of a model, or 404: :meth:`get_alias` and
        :meth:`alias_json` in one query of plain columns (the read path of
        ``GET .../aliases/{alias}``)."""
        row = self.db.execute(
            _alias_document_statement(), {"model": normalize_name(model_name), "alias": name}
        ).first()
        if row is None:
            model = self.get_model(model_name)
            raise alias_not_found(model.name, name, self._alias_names(model))
        return documents.alias_document(
            model=row.name, alias=row.alias, version=row.number, updated_at=row.updated_at,
            updated_by=row.updated_by)

    def list_aliases(self, model_name: str) -> list[dict[str, Any]]:
        """Every alias of a model."""
        model = self.get_model(model_name)
        return [self.alias_json(alias, model) for alias in model.aliases]

    def set_alias(self, model_name: str, name: str, number: int) -> tuple[Alias, Model, bool]:
        """Point an alias at a ready version, creating or moving it in one update.

        The model's row is locked first, so concurrent moves of its aliases serialize: one
        wins last and every move is in the history.  Returns the alias, its model, and
        whether it was created.
        """
        check_alias(name)
        model = self.get_model(model_name, lock=True)
        # The version's row too (after the model's, the order lock_version takes them): a
        # version being finalized or deleted is waited for, and then read as it is.
        version = self.db.scalars(
            sa.select(Version).where(Version.model_id == model.id, Version.number == number)
            .with_for_update().execution_options(populate_existing=True)
        ).first()
        if version is None:
            raise NotFound(
                f"model {model.name!r} has no version {number}",
                code="version_not_found",
                details={"model": model.name, "version": number},
            )
        if version.status != "ready":
            raise Conflict(
                f"version {number} is {version.status}: aliases point only at ready versions",
                code="version_not_ready",
                details={"status": version.status},
            )
        alias = self.db.get(Alias, (model.id, name))
        created = alias is None
        previous = None if created else alias.version.number
        if previous == number:
            return alias, model, False
        problems = validate_alias(
            self.hook, self.model_document_of(model), name, self.version_document_of(version),
            None if created else self.version_document_of(alias.version), self.settings)
        if problems:
            raise refusal(problems, f"alias {name!r} of {model.name!r}")
        now = utcnow()
        if created:
            alias = Alias(model_id=model.id, name=name, version=version, updated_at=now,
                          updated_by=self.actor)
            self.db.add(alias)
        else:
            alias.version = version
            alias.version_id = version.id
            alias.updated_at = now
            alias.updated_by = self.actor
        self.db.add(AliasHistory(model_id=model.id, alias=name, from_version=previous,
                                 to_version=number, actor=self.actor, at=now))
        self._touch(model)
        self.db.flush()
        self.db.expire(model, ["aliases"])
        self.db.expire(version, ["aliases"])
        self.record("alias.set" if created else "alias.moved", "alias",
                    f"{model.name}@{name}", model.name,
                    before=None if created else {"version": previous},
                    after={"version": number})
        if not created:
            self.queue_retention(model)  # the version it left may now be past keep_last
        return alias, model, created

    def delete_alias(self, model_name: str, name: str) -> None:
        """Delete an alias, recording the move to nothing in its history."""
        model = self.get_model(model_name, lock=True)
        alias = self._get_alias(model, name)
        previous = alias.version.number
        self.db.delete(alias)
        self.db.add(AliasHistory(model_id=model.id, alias=name, from_version=previous,
                                 to_version=None, actor=self.actor, at=utcnow()))
        self._touch(model)
        self.record("alias.deleted", "alias", f"{model.name}@{name}", model.name,
                    before={"version": previous})
        self.queue_retention(model)

    # --------------------------------------------------------------------- retention

    def queue_retention(self, model: Model) -> None:
        """Queue a retention job for ``model`` in this transaction, if retention is on."""
        if self.policy.retention:
            enqueue(self.db, RETENTION_JOB, {"model_id": model.id})

    def apply_retention(self, model_id: int, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Archive or delete the versions of a model that retention no longer keeps
        (:mod:`modelreg.policy`), each audited and written to the outbox.

        The model's row is locked first, as moving an alias locks it, so no alias lands on
        a version being archived or deleted.

        :param dry_run: only report what would be done.
        :returns: ``{"model", "version", "action"}`` of each version, oldest first.
        """
        query = sa.select(Model).where(Model.id == model_id)
        model = self.db.scalar(query if dry_run else query.with_for_update())
        if model is None:
            return []
        action = self.policy.retention_action
        done = []
        for version in retention_victims(self.db, self.policy, model.id):
            if version.status == ARCHIVED or action == "delete":
                verb = "delete"
            else:
                verb = "archive"
            done.append({"model": model.name, "version": version.number, "action": verb})
            if dry_run:
                continue
            target = f"{model.name}/{version.number}"
            before = {"number": version.number, "status": version.status}
            if verb == "delete":
                self.db.delete(version)
                self.record("version.deleted", "version", target, model.name,
                            before=before, after={"reason": "retention"})
            else:
                # The file rows go (their blobs become garbage unless another version holds
                # them); the list stays on the version, as the API showed it.
                version.archived_files = [
                    {"path": f.path, "size": f.size, "sha256": f.sha256,
                     "media_type": f.media_type, "created_at": isotime(f.created_at),
                     "created_by": f.created_by}
                    for f in self.db.scalars(
                        sa.select(File).where(File.version_id == version.id)
                        .order_by(File.path))
                ]
                self.db.execute(sa.delete(File).where(File.version_id == version.id))
                version.status = ARCHIVED
                version.updated_at = utcnow()
                version.updated_by = self.actor
                self.record("version.archived", "version", target, model.name,
                            before=before, after={"status": ARCHIVED, "reason": "retention"})
        self.db.flush()
        return done

    def alias_history(
        self, model_name: str, name: str, *, page_size: str | None, page_token: str | None
    ) -> tuple[Model, list[dict[str, Any]], str | None]:
        """The moves of an alias, newest first (kept after the alias is deleted)."""
        model = self.get_model(model_name)
        size = paging.parse_page_size(page_size)
        query_id = paging.fingerprint("alias_history", model.normalized_name, name)
        query = sa.select(AliasHistory).where(
            AliasHistory.model_id == model.id, AliasHistory.alias == name
        )
        order = paging.Order("id", AliasHistory.id, True, AliasHistory.id)
        key = paging.decode_token(page_token, query_id, order)
        if key is not None:
            query = query.where(order.after(key))
        rows = self.db.scalars(query.order_by(*order.clauses()).limit(size + 1)).all()
        page, more = rows[:size], len(rows) > size
        if not page and key is None and self.db.get(Alias, (model.id, name)) is None:
            raise alias_not_found(model.name, name, self._alias_names(model),
                                  " and never had")
        token = paging.encode_token([page[-1].id, page[-1].id], query_id) if more else None
        moves = [
            {
                "alias": row.alias,
                "from_version": row.from_version,
                "to_version": row.to_version,
                "actor": row.actor,
                "at": isotime(row.at),
            }
            for row in page
        ]
        return model, moves, token
