"""The registry's reads: models, versions, aliases and alias history as the API shows them.

:class:`RegistryQueries` reads through the session it is given and writes nothing; each
document is rendered by the one function of :mod:`modelreg.registry.documents` for its
resource.  The writes build on it (:mod:`modelreg.registry.commands`), and
:class:`~modelreg.registry.services.RegistryService` is what callers use
(docs/architecture.md).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, contains_eager, selectinload

from .. import paging
from ..db import plain_connection, plain_rows
from ..errors import NotFound, Unprocessable
from ..models import (
    Alias,
    AliasHistory,
    File,
    Model,
    ModelTag,
    Version,
    VersionTag,
    isotime,
)
from ..names import (
    DIGEST_PREFIX,
    LATEST,
    is_number,
    normalize_name,
    parse_number,
)
from ..policy import (
    PolicyRules,
    policy_rules,
)
from . import documents, filters
from .documents import model_document, version_document
from .errors import model_not_found


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
    """The statement of :meth:`RegistryQueries.get_model` (parameter ``name``, normalized),
    built once (with and without ``FOR UPDATE``)."""
    query = sa.select(Model).where(Model.normalized_name == sa.bindparam("name"))
    return query.with_for_update() if lock else query


@functools.cache
def _version_statement(kind: str) -> Any:
    """The statement of :meth:`RegistryQueries.get_version` for refs of ``kind``, with the
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
    """The statement of :meth:`RegistryQueries.version_document` for refs of ``kind``, with
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
    """The statement of :meth:`RegistryQueries.alias_document` (parameters ``model``, the
    normalized name, and ``alias``), built once."""
    return (
        sa.select(Model.name, Alias.name.label("alias"), Version.number, Alias.updated_at,
                  Alias.updated_by)
        .join(Alias, Alias.model_id == Model.id)
        .join(Version, Version.id == Alias.version_id)
        .where(Model.normalized_name == sa.bindparam("model"),
               Alias.name == sa.bindparam("alias"))
    )


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


class RegistryQueries:
    """Reads of models, versions, tags and aliases, for one request (or one script
    transaction).

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

    def model_json(self, model: Model, latest: int | None = None, *,
                   new: bool = False) -> dict[str, Any]:
        """The API representation of ``model``.

        :param latest: its latest version's number, if the caller knows it (else read).
        :param new: a model created in this transaction: no version, hence no latest (and
            no query for it).
        """
        if latest is None and not new:
            latest = self._latest_number(model)
        return model_document(
            name=model.name,
            description=model.description,
            tags={tag.key: tag.value for tag in model.tags},
            aliases={alias.name: alias.version.number for alias in model.aliases},
            latest=latest,
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

    def model_document_of(self, model: Model) -> dict[str, Any]:
        """What :meth:`model_json` gives for ``model``, read in one statement (pending
        changes of the session are flushed first) instead of three."""
        rows = self.db.execute(_model_document_statement(), {"id": model.id}).all()
        return next(iter(_model_documents(rows).values()))

    def version_json(self, version: Version) -> dict[str, Any]:
        """The API representation of ``version``."""
        return version_document(
            version,
            model=version.model.name,
            metadata=version.metadata_,
            tags={tag.key: tag.value for tag in version.tags},
            aliases=[alias.name for alias in version.aliases],
        )

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

    def _plain_rows(self, statement: Any, params: dict[str, Any]) -> Any:
        """The result of a statement of plain columns, on the session's connection
        (:func:`modelreg.db.plain_connection`): none of the ORM's per-execution work (its
        compile state, loading context and result wrapping — about a third of the
        statement's CPU; docs/performance.md, "Read path").  The session's pending changes
        are flushed first, as the ORM's autoflush would."""
        return plain_connection(self.db).execute(statement, params)

    def _version_document(self, normalized: str, kind: str, value: Any) -> dict[str, Any] | None:
        rows = plain_rows(self.db, _version_document_statement(kind),
                          {"model": normalized, "value": value})
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

    def get_version_for_write(self, model_name: str, ref: str) -> Version:
        """The version a write request names by number, unlocked: for checks before a body
        is read (the write itself goes through :meth:`lock_version`)."""
        version_number(ref)
        return self.get_version(model_name, ref)

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

    def files_json(self, version: Version) -> list[dict[str, Any]]:
        """The files of ``version`` as validators and scanners see them, sorted by path."""
        return [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "media_type": f.media_type}
            for f in self.db.scalars(
                sa.select(File).where(File.version_id == version.id).order_by(File.path))
        ]

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
        row = self._plain_rows(
            _alias_document_statement(), {"model": normalize_name(model_name), "alias": name}
        ).first()
        if row is None:
            model = self.get_model(model_name)
            raise alias_not_found(model.name, name, self._alias_names(model))
        model_name, alias, number, updated_at, updated_by = row  # the statement's columns
        return documents.alias_document(
            model=model_name, alias=alias, version=number, updated_at=updated_at,
            updated_by=updated_by)

    def list_aliases(self, model_name: str) -> list[dict[str, Any]]:
        """Every alias of a model."""
        model = self.get_model(model_name)
        return [self.alias_json(alias, model) for alias in model.aliases]

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
