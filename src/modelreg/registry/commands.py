"""The registry's writes: models, versions, tags and aliases created, changed and deleted.

:class:`RegistryCommands` writes through the request's session (committed or aborted by
pyramid_tm, or by :func:`modelreg.db.transaction` outside a request, never here), asks the
validation hooks, and records every mutation as an audit event and an outbox event in the
same transaction as the change.  Every write to a version reaches its row through
:meth:`RegistryCommands.lock_version`.  It extends the reads,
:class:`~modelreg.registry.queries.RegistryQueries`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import (
    Session,
    aliased,
    contains_eager,
    lazyload,
    make_transient_to_detached,
)
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ..auditing import TARGET_LENGTH
from ..db import execute_alone, mark_changed
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
    check_alias,
    check_model_name,
    check_tag,
    has_control,
    normalize_name,
)
from ..policy import (
    ARCHIVED,
    RETENTION_JOB,
    check_new_version,
    policy_rules,
    refusal,
    retention_victims,
    size_problems,
)
from ..scanning import SCAN_JOB, file_count_problems, has_scanners
from ..validation import alias_rules, validate_alias, validate_model, validate_version
from .errors import model_not_found
from .queries import (
    RegistryQueries,
    version_not_found,
    version_number,
)

#: Largest serialised size of a version's ``metadata`` or ``lineage``.
MAX_DOCUMENT_BYTES = 64 * 1024


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


def _expire_unloaded(db: Session, owner: Any, collection: str) -> None:
    """Forget ``owner.<collection>`` if it was loaded, so that it is read again (with a row
    added behind its back) the next time it is used; nothing to do, and no query, if not."""
    if collection not in sa.inspect(owner).unloaded:
        db.expire(owner, [collection])


#: The columns :meth:`RegistryCommands.record` writes, per table.
_AUDIT_COLUMNS = ("at", "actor", "action", "target_type", "target", "before", "after",
                  "client_addr", "token_id")
_OUTBOX_COLUMNS = ("event_id", "type", "model", "payload", "created_at", "attempts")


def _insert_of(table: sa.Table, columns: Iterable[str], prefix: str) -> sa.Insert:
    """``INSERT INTO table`` of ``columns``, each from the parameter ``prefix + column``."""
    return table.insert().values({
        name: sa.bindparam(prefix + name, type_=table.c[name].type) for name in columns})


#: The statements of :meth:`RegistryCommands.record` (Core: see there): the two INSERTs,
#: and both as one statement where the database takes an INSERT as a common table
#: expression of another (PostgreSQL): one round trip instead of two.
_AUDIT_INSERT = _insert_of(AuditEvent.__table__, _AUDIT_COLUMNS, "audit_")
_OUTBOX_INSERT = _insert_of(OutboxEvent.__table__, _OUTBOX_COLUMNS, "outbox_")
_RECORD_INSERT = _OUTBOX_INSERT.add_cte(_AUDIT_INSERT.cte("audit_event"))
#: Dialects that run :data:`_RECORD_INSERT`.
_DML_CTE_DIALECTS = frozenset({"postgresql"})


@functools.cache
def _locked_version_statement() -> Any:
    """A version by its model's normalized name (parameter ``model``) and its number
    (``number``), with its model, the version's row locked (``FOR UPDATE OF versions``) and
    read as it is under the lock: :meth:`RegistryCommands.lock_version` in one statement."""
    return (
        sa.select(Version)
        .join(Model, Model.id == Version.model_id)
        .where(Model.normalized_name == sa.bindparam("model"),
               Version.number == sa.bindparam("number"))
        .options(contains_eager(Version.model))
        .with_for_update(of=Version)
        .execution_options(populate_existing=True)
    )


@functools.cache
def _touch_version_statement() -> Any:
    """``UPDATE`` of a version's ``updated_at`` (parameter ``touched_at``) by its model's
    normalized name (``model_name``) and number (``version_number``), returning the version's
    id and number (read under the row lock the UPDATE takes) and its model's name."""
    versions, models = Version.__table__, Model.__table__
    model_id = (sa.select(models.c.id)
                .where(models.c.normalized_name == sa.bindparam("model_name"))
                .scalar_subquery())
    model_name = (sa.select(models.c.name).where(models.c.id == versions.c.model_id)
                  .scalar_subquery())
    return (
        sa.update(versions)
        .where(versions.c.model_id == model_id,
               versions.c.number == sa.bindparam("version_number"))
        .values(updated_at=sa.bindparam("touched_at"))
        .returning(versions.c.id, versions.c.number, model_name.label("model_name"))
    )


@dataclasses.dataclass(frozen=True)
class LockedVersion:
    """A version whose row a tag's write locked: what the write needs of it."""

    id: int
    number: int


@functools.cache
def _version_and_alias_statement() -> Any:
    """A model's version (parameters ``model_id``, ``version_number``), its row locked and
    read as it is under the lock, with the model's alias ``alias_name`` (``None`` if it has
    none): :meth:`RegistryCommands.set_alias`'s reads after the model's lock, in one
    statement, with the number of the version the alias points at."""
    previous = aliased(Version)
    return (
        sa.select(Version, Alias, previous.number)
        .outerjoin(Alias, sa.and_(Alias.model_id == Version.model_id,
                                  Alias.name == sa.bindparam("alias_name")))
        .outerjoin(previous, previous.id == Alias.version_id)
        .where(Version.model_id == sa.bindparam("model_id"),
               Version.number == sa.bindparam("version_number"))
        # Neither relationship joined in (their eager joins are inner joins, which would
        # drop the version of a new alias); the model is the one locked before, in the
        # session already.
        .options(lazyload(Version.model), lazyload(Alias.version))
        .with_for_update(of=Version)
        .execution_options(populate_existing=True)
    )


@functools.cache
def _alias_statements(as_ctes: bool) -> dict[bool, tuple[Any, ...]]:
    """What :meth:`RegistryCommands.set_alias` writes, for a moved alias (``False``) and a
    new one (``True``): the history row, the model's ``updated_at`` and ``updated_by``, the
    alias's UPDATE or INSERT; in one statement if ``as_ctes``.  Parameters prefixed
    ``history_``, ``touch_``, ``alias_``."""
    aliases, models = Alias.__table__, Model.__table__
    history = _insert_of(AliasHistory.__table__, ("model_id", "alias", "from_version",
                                                  "to_version", "actor", "at"), "history_")
    touch = (sa.update(models).where(models.c.id == sa.bindparam("touch_model_id"))
             .values(updated_at=sa.bindparam("touch_at", type_=models.c.updated_at.type),
                     updated_by=sa.bindparam("touch_by", type_=models.c.updated_by.type)))
    insert = _insert_of(aliases, ("model_id", "name", "version_id", "updated_at",
                                  "updated_by"), "alias_")
    move = (sa.update(aliases)
            .where(aliases.c.model_id == sa.bindparam("alias_model_id"),
                   aliases.c.name == sa.bindparam("alias_name"))
            .values({name: sa.bindparam("alias_" + name, type_=aliases.c[name].type)
                     for name in ("version_id", "updated_at", "updated_by")}))
    if as_ctes:
        return {created: (write.add_cte(history.cte("alias_history_row"))
                          .add_cte(touch.cte("model_touched")),)
                for created, write in ((True, insert), (False, move))}
    return {True: (history, touch, insert), False: (history, touch, move)}


@functools.cache
def _name_taken_statement() -> Any:
    """The name of the model whose normalized name is the parameter ``normalized`` (a Core
    statement, built once: no ORM compilation per request)."""
    models = Model.__table__
    return sa.select(models.c.name).where(models.c.normalized_name == sa.bindparam("normalized"))


@functools.cache
def _columns_of(cls: Any) -> dict[str, str]:
    """The column name of each attribute of the mapped class ``cls`` that is a column."""
    return {prop.key: prop.columns[0].name for prop in cls.__mapper__.column_attrs}


@functools.cache
def _insert_of_class(cls: Any, returning: bool = True) -> Any:
    """The ``INSERT`` of a row of ``cls``'s table (returning its id where the database
    can)."""
    statement = sa.insert(cls.__table__)
    return statement.returning(cls.__table__.c.id) if returning else statement


#: The function of migration 0012 (PostgreSQL): a version tag's value, read with a snapshot
#: taken when it runs.
_TAG_VALUE_FUNCTION = "modelreg_version_tag_value"


@functools.cache
def _set_tag_statement() -> Any:
    """PostgreSQL: :meth:`RegistryCommands.set_version_tag` in one statement, each step a
    common table expression of it: the version's row locked and touched (as by
    :func:`_touch_version_statement`, parameters ``model_name``, ``version_number``,
    ``touched_at``), the tag's previous value read, the tag inserted or updated (parameters
    ``key``, ``value``), and the audit and outbox events (as :meth:`RegistryCommands.record`
    writes them, parameters ``audit_*`` and ``outbox_*``; ``before`` the previous value).
    Returns the version's id and number; no row if there is no such version, and then
    nothing was written.

    The version's lock is then held for this statement and the ``COMMIT`` only, rather than
    across three round trips: sixteen writers of one version's tags queue on it
    (docs/performance.md, "Write path").  The previous value is read by the ``VOLATILE``
    function of migration 0012, whose query takes its own snapshot once the lock is granted
    (the statement's own snapshot predates the wait, and would miss a tag another writer
    added meanwhile, or see its old value); the tag's write takes its rows from that read,
    so it runs after it."""
    tags = VersionTag.__table__
    touched = _touch_version_statement().cte("touched")
    key = sa.bindparam("key", type_=tags.c.key.type)
    previous = sa.select(
        touched.c.id, touched.c.number, touched.c.model_name,
        getattr(sa.func, _TAG_VALUE_FUNCTION)(touched.c.id, key,
                                              type_=tags.c.value.type).label("value"),
    ).cte("previous")
    upsert = postgresql.insert(tags).from_select(
        ["version_id", "key", "value"],
        sa.select(previous.c.id, key, sa.bindparam("value", type_=tags.c.value.type)))
    upsert = upsert.on_conflict_do_update(
        index_elements=[tags.c.version_id, tags.c.key],
        set_={"value": upsert.excluded.value})
    target = sa.func.left(
        previous.c.model_name + sa.literal_column("'/'", sa.String)
        + sa.cast(previous.c.number, sa.String) + sa.literal_column("':'", sa.String) + key,
        sa.literal_column(str(TARGET_LENGTH)))
    before = sa.case((previous.c.value.is_(None), sa.null()),
                     else_=_json_object(value=previous.c.value))
    audit, event = _record_ctes(sa.select().select_from(previous), target=target,
                                model=previous.c.model_name, before=before)
    return (sa.select(previous.c.id, previous.c.number)
            .add_cte(upsert.cte("upsert"), audit, event))


@functools.cache
def _next_number_statement() -> Any:
    """The model's columns (parameter ``normalized``: its normalized name), in the order of
    :func:`_columns_of`, with its version counter incremented, its row locked by the UPDATE
    and returned by it: :meth:`RegistryCommands.create_version` in
    one statement where the database returns rows of an UPDATE."""
    models = Model.__table__
    return (
        sa.update(models)
        .where(models.c.normalized_name == sa.bindparam("normalized"))
        .values(next_version=models.c.next_version + 1)
        .returning(*(models.c[column] for column in _columns_of(Model).values()))
    )


def _json_object(**members: Any) -> Any:
    """SQL's ``json_build_object`` of ``members`` (name: SQL expression), in their order."""
    return sa.func.json_build_object(
        *itertools.chain.from_iterable(
            (sa.literal_column(f"'{name}'"), value) for name, value in members.items()),
        type_=AuditEvent.__table__.c.after.type)


def _record_ctes(rows: sa.Select, **exprs: Any) -> tuple[Any, Any]:
    """PostgreSQL: the INSERTs of :meth:`RegistryCommands.record`, as common table
    expressions of a statement that also makes the change they record, one event for each
    row of ``rows`` (a ``SELECT`` of no columns: its ``FROM`` and ``WHERE``).  Each of
    ``target``, ``model``, ``before`` and ``after`` is the SQL expression in ``exprs`` where
    given, else the parameter of :meth:`RegistryCommands._record_params`; the outbox's payload
    is made of them as ``record`` makes it."""
    audits, outbox = AuditEvent.__table__, OutboxEvent.__table__
    given = {name: exprs.get(name, sa.bindparam("audit_" + name, type_=audits.c[name].type))
             for name in ("target", "before", "after")}
    given["model"] = exprs.get("model", sa.bindparam("outbox_model",
                                                     type_=outbox.c.model.type))
    given["payload"] = _json_object(
        target=given["target"],
        actor=sa.bindparam("audit_actor", type_=audits.c.actor.type),
        before=given["before"], after=given["after"])
    audit = audits.insert().from_select(list(_AUDIT_COLUMNS), rows.add_columns(*(
        given.get(column, sa.bindparam("audit_" + column, type_=audits.c[column].type))
        for column in _AUDIT_COLUMNS)))
    event = outbox.insert().from_select(list(_OUTBOX_COLUMNS), rows.add_columns(*(
        given.get(column, sa.bindparam("outbox_" + column, type_=outbox.c[column].type))
        for column in _OUTBOX_COLUMNS)))
    return audit.cte("audit_event"), event.cte("outbox_event")


def _as_read(cls: Any, values: dict[str, Any]) -> Any:
    """An object of the mapped class ``cls`` whose attributes are ``values`` (by name), as
    the ORM makes one from a row it reads (its state made, the values put in its
    ``__dict__``), not through the constructor, whose event for each attribute set cost a
    third of the CPU of :meth:`RegistryCommands.create_version`'s objects."""
    obj = cls.__mapper__.class_manager.new_instance()
    obj.__dict__.update(values)
    return obj


#: The model's columns a version created ``alone`` needs (its document: the model's name,
#: and the number the counter gave), of :meth:`RegistryCommands.create_version`.
_ALONE_MODEL_COLUMNS = ("id", "name", "next_version")

#: The columns of a version :meth:`RegistryCommands.create_version` sets from parameters
#: (each ``version_<column>``): all but its model and number.
_NEW_VERSION_COLUMNS = ("status", "description", "metadata", "lineage", "problems", "digest",
                        "archived_files", "created_at", "updated_at", "finalized_at",
                        "created_by", "updated_by")


@functools.cache
def _create_version_statement(model_columns: tuple[str, ...] | None = None) -> Any:
    """PostgreSQL: :meth:`RegistryCommands.create_version` in one statement, each write a
    common table expression of it: the model's counter incremented (its row locked, as by
    :func:`_next_number_statement`), the version inserted with the number it took, its tags
    (parameter ``tags``, a JSON object) inserted, and its audit and outbox events (as
    :meth:`RegistryCommands.record` writes them, parameters ``audit_*`` and ``outbox_*``).
    Returns the model's columns (``model_columns``, else all of them in the order of
    :func:`_columns_of`) and the new version's id; no row if there is no such model, and then
    nothing was written.

    The model's lock is then held for this statement and the ``COMMIT`` only, rather than
    across four round trips: concurrent creators of one model's versions queue on that lock
    (docs/performance.md, "Write path").  Nothing in it reads another table, so the
    statement's snapshot, taken before the lock was granted, hides nothing it needs."""
    versions = Version.__table__
    tags = VersionTag.__table__
    counted = _next_number_statement().cte("counted")
    new_version = (
        sa.insert(versions)
        .from_select(
            ["model_id", "number", *_NEW_VERSION_COLUMNS],
            sa.select(counted.c.id, counted.c.next_version - 1, *(
                sa.bindparam("version_" + column, type_=versions.c[column].type)
                for column in _NEW_VERSION_COLUMNS)))
        .returning(versions.c.id, versions.c.number)
        .cte("new_version")
    )
    given_tags = sa.bindparam("tags", type_=AuditEvent.__table__.c.after.type)
    given = sa.func.json_each_text(given_tags).table_valued("key", "value")
    new_tags = tags.insert().from_select(
        ["version_id", "key", "value"],
        sa.select(new_version.c.id, given.c.key, given.c.value)
        .select_from(new_version).join(given, sa.true()))
    target = sa.func.left(
        counted.c.name + sa.literal_column("'/'", sa.String)
        + sa.cast(new_version.c.number, sa.String), sa.literal_column(str(TARGET_LENGTH)))
    after = _json_object(number=new_version.c.number, tags=given_tags)
    audit, event = _record_ctes(
        sa.select().select_from(counted).join(new_version, sa.true()),
        target=target, model=counted.c.name, before=sa.null(), after=after)
    return (
        sa.select(*(counted.c[column]
                    for column in model_columns or _columns_of(Model).values()),
                  new_version.c.id)
        .select_from(counted).join(new_version, sa.true())
        .add_cte(new_tags.cte("new_tags"), audit, event)
    )


class RegistryCommands(RegistryQueries):
    """Writes of models, versions, tags and aliases (and the reads of
    :class:`RegistryQueries`), each recorded in the audit log and the outbox."""

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
        five times the CPU of the plain statement (0.4 against 0.08 ms for the two).  On
        PostgreSQL the two are one statement (the audit INSERT a common table expression of
        the outbox INSERT): one round trip.  The session is marked changed, so that its
        transaction commits even where nothing else was flushed.
        """
        params = self._record_params(action, target_type, target, model, before, after)
        if self.db.get_bind().dialect.name in _DML_CTE_DIALECTS:
            self.db.connection().execute(_RECORD_INSERT, params)
        else:
            self.db.execute(_AUDIT_INSERT, params)
            self.db.execute(_OUTBOX_INSERT, params)
        mark_changed(self.db)

    def _record_params(
        self, action: str, target_type: str, target: str | None, model: str | None,
        before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The parameters of :meth:`record`'s statements (prefixed ``audit_`` and
        ``outbox_``).  ``target`` ``None``: a statement that makes the target and the
        events' documents itself (:func:`_create_version_statement`) takes the rest."""
        now = utcnow()
        params = {
            "audit_at": now,
            "audit_actor": self.actor,
            "audit_action": action,
            "audit_target_type": target_type,
            "audit_target": target,
            "audit_before": before,
            "audit_after": after,
            "audit_client_addr": self.client_addr,
            "audit_token_id": self.token_id,
            "outbox_event_id": str(uuid.uuid4()),
            "outbox_type": action,
            "outbox_model": model,
            "outbox_payload": {"target": target, "actor": self.actor, "before": before,
                               "after": after},
            "outbox_created_at": now,
            "outbox_attempts": 0,
        }
        return params

    def _write_one(self, statement: Any, params: dict[str, Any], *, alone: bool) -> Any:
        """Run a write of one Core statement on the session's connection, the session marked
        changed (:func:`mark_changed`); through :func:`modelreg.db.execute_alone` (it may
        commit itself) when the caller promised that its transaction writes nothing else."""
        if alone:
            return execute_alone(self.db, statement, params)
        result = self.db.connection().execute(statement, params)
        mark_changed(self.db)
        return result

    def _check_name_free(self, name: str, normalized: str) -> None:
        existing = self.db.scalar(_name_taken_statement(), {"normalized": normalized})
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

    @contextlib.contextmanager
    def _name_unique(self, name: str) -> Iterator[None]:
        """A 409 for ``name`` if the block's write breaks the unique index on model names:
        two requests may pass the existence check at once, and the index decides."""
        try:
            yield
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
        values = {"name": name, "normalized_name": normalized, "description": description,
                  "next_version": 1, "created_at": now, "updated_at": now,
                  "created_by": self.actor, "updated_by": self.actor}
        with self._name_unique(name):
            model = self._insert_new(Model, values, ModelTag, tags, owner_key="model_id",
                                     loaded={"aliases": []})
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
        with self._name_unique(model.name):
            self.db.flush()
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

    def create_version(
        self,
        model_name: str,
        *,
        description: str,
        metadata: dict[str, Any],
        lineage: dict[str, Any],
        tags: dict[str, str],
        alone: bool = False,
    ) -> Version:
        """Create a draft version numbered from the model's counter.

        The counter is incremented with an ``UPDATE`` on the model's row, which locks it for
        the rest of the transaction: concurrent creators queue there and each reads back its
        own number, so numbers have no gaps and no duplicates and are never reused (the
        unique constraint on (model, number) is the last guard).

        :param alone: the caller's promise that its transaction writes nothing else and
            only reads the version returned (the REST view, which renders it): where the
            creation is one statement, it may then commit itself
            (:func:`modelreg.db.execute_alone`), and the version and its model are made
            outside the session, which then has nothing to flush or to track.
        """
        _check_document("metadata", metadata)
        _check_document("lineage", lineage)
        _check_tags(tags)
        now = utcnow()
        values = {"status": "draft", "description": description, "metadata_": metadata,
                  "lineage": lineage, "problems": None, "digest": None,
                  "archived_files": None, "created_at": now, "updated_at": now,
                  "finalized_at": None, "created_by": self.actor, "updated_by": self.actor}
        loaded = {"aliases": []}
        parent = lineage.get("parent_version")
        if (parent is None and policy_rules(self.settings).max_versions is None
                and self.db.get_bind().dialect.name in _DML_CTE_DIALECTS):
            # Nothing to check under the model's lock: all of it in one statement.
            params = {
                "normalized": normalize_name(model_name), "tags": tags,
                **{"version_" + column: values[key]
                   for key, column in _columns_of(Version).items() if key in values},
                **self._record_params("version.created", "version", None, None),
            }
            row = self._write_one(
                _create_version_statement(_ALONE_MODEL_COLUMNS if alone else None), params,
                alone=alone).first()
            if row is None:
                raise model_not_found(model_name)
            if alone:
                model = _as_read(Model, dict(zip(_ALONE_MODEL_COLUMNS, row[:-1], strict=True)))
            else:
                model = self._loaded_model(dict(zip(_columns_of(Model), row[:-1], strict=True)))
            values.update(model_id=model.id, number=model.next_version - 1)
            return self._as_loaded(Version, row[-1], values, VersionTag, tags,
                                   owner_key="version_id", loaded={**loaded, "model": model},
                                   in_session=not alone)
        model = self._count_version(model_name)
        number = model.next_version - 1
        if parent is not None and self._find_version(model, parent) is None:
            raise Unprocessable(
                f"lineage.parent_version {parent} is not a version of {model.name!r}",
                code="invalid_lineage",
                details={"field": "lineage.parent_version"},
            )
        # The update above locked the model's row: concurrent creators count one by one.
        check_new_version(self.db, self.settings, model)
        values.update(model_id=model.id, number=number)
        version = self._insert_new(Version, values, VersionTag, tags, owner_key="version_id",
                                   loaded={**loaded, "model": model})
        self.record("version.created", "version", f"{model.name}/{number}", model.name,
                    after={"number": number, "tags": tags})
        return version

    def _insert_new(self, cls: Any, values: dict[str, Any], tag_cls: Any, tags: dict[str, str],
                    *, owner_key: str, loaded: dict[str, Any]) -> Any:
        """A new row of ``cls`` (``values`` by attribute) and its tags (rows of ``tag_cls``
        whose ``owner_key`` is its id), written with ``INSERT`` statements at once rather
        than flushed by the unit of work, which cost as much CPU as the rest of the
        request's statements together (docs/performance.md, "Write path").  The object
        returned is in the session as if it had been read, its tags and the relationships
        in ``loaded`` (name: value) loaded."""
        row = {_columns_of(cls)[key]: value for key, value in values.items()}
        if self.db.get_bind().dialect.insert_returning:
            new_id = self.db.execute(_insert_of_class(cls), row).scalar_one()
        else:
            new_id = self.db.execute(_insert_of_class(cls, returning=False),
                                     row).inserted_primary_key[0]
        if tags:
            self.db.execute(sa.insert(tag_cls.__table__), [
                {owner_key: new_id, "key": k, "value": v} for k, v in tags.items()])
        return self._as_loaded(cls, new_id, values, tag_cls, tags, owner_key=owner_key,
                               loaded=loaded)

    def _as_loaded(self, cls: Any, new_id: int, values: dict[str, Any], tag_cls: Any,
                   tags: dict[str, str], *, owner_key: str, loaded: dict[str, Any],
                   in_session: bool = True) -> Any:
        """The row of ``cls`` just inserted with id ``new_id``, as :meth:`_insert_new`
        returns it (``in_session=False``: outside the session, to be read only)."""
        obj = _as_read(cls, {"id": new_id, **values})
        tag_objects = [_as_read(tag_cls, {owner_key: new_id, "key": k, "value": v})
                       for k, v in sorted(tags.items())]
        if in_session:
            for each in (obj, *tag_objects):
                make_transient_to_detached(each)
        set_committed_value(obj, "tags", tag_objects)
        for name, value in loaded.items():
            set_committed_value(obj, name, value)
        if in_session:
            self.db.add(obj)
        return obj

    def _count_version(self, model_name: str) -> Model:
        """The model, its version counter incremented (its next number is then
        ``next_version - 1``).  The ``UPDATE`` locks the model's row for the rest of the
        transaction, and returns it where the database can (PostgreSQL, SQLite): one
        statement instead of three (read the model, update, read the counter back)."""
        name = normalize_name(model_name)
        if self.db.get_bind().dialect.update_returning:
            # A Core statement, its row made the model object here: the ORM's loading of
            # an UPDATE's RETURNING cost more CPU than the rest of the statement.
            row = self.db.connection().execute(_next_number_statement(),
                                               {"normalized": name}).first()
            if row is None:
                raise model_not_found(model_name)
            return self._loaded_model(dict(zip(_columns_of(Model), row, strict=True)))
        model = self.get_model(model_name)
        models = Model.__table__
        self.db.execute(
            sa.update(models)
            .where(models.c.id == model.id)
            .values(next_version=models.c.next_version + 1)
        )
        self.db.refresh(model, ["next_version"])
        return model

    def _loaded_model(self, values: dict[str, Any]) -> Model:
        """The model whose columns (by attribute) a statement returned, in the session as if
        it had been read."""
        held = self.db.identity_map.get(identity_key(Model, values["id"]))
        if held is not None:  # read earlier in this session: as it is now
            for key, value in values.items():
                set_committed_value(held, key, value)
            return held
        model = _as_read(Model, values)
        make_transient_to_detached(model)
        self.db.add(model)
        return model

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
        # populate_existing: the row as it is now (under the lock), not as first read.
        if lock_model:
            model = self.get_model(model_name, lock=True)
            version = self.db.scalars(
                sa.select(Version).where(Version.model_id == model.id,
                                         Version.number == number)
                .with_for_update().execution_options(populate_existing=True)
            ).first()
            if version is None:
                raise version_not_found(model.name, ref)
        else:
            # One statement: the version joined with its model, only the version's row
            # locked (the model's stays free for writers of its other versions).
            version = self.db.scalars(
                _locked_version_statement(),
                {"model": normalize_name(model_name), "number": number},
            ).first()
            if version is None:
                raise self._ref_not_found(model_name, ref)
        if draft is not None and version.status != "draft":
            code, message = draft
            raise Conflict(
                f"version {version.number} is {version.status}: {message}",
                code=code,
                details={"status": version.status},
            )
        return version

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

    def set_version_tag(self, model_name: str, ref: str, key: str, value: str, *,
                        alone: bool = False) -> None:
        """Set a tag on a version (any state: tags annotate, they are not content).

        :param alone: the caller's promise that its transaction writes nothing else (the
            REST view): where the write is one statement, it may then commit itself
            (:func:`modelreg.db.execute_alone`).
        """
        check_tag(key, value)
        if (self.db.get_bind().dialect.name in _DML_CTE_DIALECTS
                and not self._alias_rules()):
            # The lock, the read of the tag, its INSERT or UPDATE and the two events in one
            # statement, rather than the lock's, a read, the unit of work's flush and
            # record()'s.
            params = {"model_name": normalize_name(model_name),
                      "version_number": version_number(ref), "touched_at": utcnow(),
                      "key": key, "value": value,
                      **self._record_params("version.tag_set", "version_tag", None, None,
                                            after={"value": value})}
            row = self._write_one(_set_tag_statement(), params, alone=alone).first()
            if row is None:
                raise self._ref_not_found(model_name, ref)
            held = self.db.identity_map.get(identity_key(Version, row[0]))
            if held is not None:  # read earlier in this session: changed behind its back
                self.db.expire(held, ["updated_at"])
            tag = self.db.identity_map.get(identity_key(VersionTag, (row[0], key)))
            if tag is not None:
                self.db.expire(tag, ["value"])
            self._forget_tags(LockedVersion(row[0], row[1]))
            return
        version, name, rules = self._lock_for_tags(model_name, ref)
        if rules:
            self._check_alias_targets(version, lambda tags: {**tags, key: value})
        tag = self.db.get(VersionTag, (version.id, key))
        before = None if tag is None else {"value": tag.value}
        if tag is None:
            # Added to the session, not appended to version.tags: that would load the whole
            # collection first, a query this request has no use for.
            self.db.add(VersionTag(version_id=version.id, key=key, value=value))
            self._forget_tags(version)
        else:
            tag.value = value
        if rules is not None:
            version.updated_at = utcnow()
        self.record("version.tag_set", "version_tag", f"{name}/{version.number}:{key}", name,
                    before=before, after={"value": value})

    def delete_version_tag(self, model_name: str, ref: str, key: str) -> None:
        """Delete a tag of a version; 404 if it has no such tag."""
        version, name, rules = self._lock_for_tags(model_name, ref)
        tag = self.db.get(VersionTag, (version.id, key))
        if tag is None:
            raise NotFound(
                f"version {version.number} of {name!r} has no tag {key!r}",
                code="tag_not_found",
                details={"key": key},
            )
        if rules:
            self._check_alias_targets(
                version, lambda tags: {k: v for k, v in tags.items() if k != key})
        # Deleted as a row, not removed from version.tags: that would load the whole
        # collection first, a query this request has no use for.
        self.db.delete(tag)
        self._forget_tags(version)
        if rules is not None:
            version.updated_at = utcnow()
        self.record("version.tag_deleted", "version_tag", f"{name}/{version.number}:{key}",
                    name, before={"value": tag.value})

    def _forget_tags(self, version: Version | LockedVersion) -> None:
        """Forget the version's loaded tags (if this session holds it), after a tag's write
        behind their back."""
        if not isinstance(version, Version):
            version = self.db.identity_map.get(identity_key(Version, version.id))
            if version is None:
                return
        _expire_unloaded(self.db, version, "tags")

    def _lock_for_tags(self, model_name: str, ref: str
                       ) -> tuple[Version | LockedVersion, str, bool | None]:
        """The version whose tags a request changes, its row locked, with its model's name,
        and whether alias rules apply (:meth:`_alias_rules`).

        With alias rules, the model's row is locked first (:meth:`lock_version` with
        ``lock_model``), as moving an alias locks it.  Without, only the version's row, and
        where the database returns rows of an UPDATE, by the ``UPDATE`` that sets its
        ``updated_at`` (one statement for two; the rules flag is then ``None``: the caller
        has nothing left to set)."""
        rules = self._alias_rules()
        if rules or not self.db.get_bind().dialect.update_returning:
            version = self.lock_version(model_name, ref, lock_model=rules)
            return version, version.model.name, rules
        # A Core statement: loading the version as an object cost a third of the CPU of
        # a tag's write, and the write needs only its id and number.
        row = self.db.connection().execute(_touch_version_statement(), {
            "model_name": normalize_name(model_name), "version_number": version_number(ref),
            "touched_at": utcnow()}).first()
        if row is None:
            raise self._ref_not_found(model_name, ref)
        held = self.db.identity_map.get(identity_key(Version, row[0]))
        if held is not None:  # read earlier in this session: its updated_at just changed
            self.db.expire(held, ["updated_at"])
        return LockedVersion(row[0], row[1]), row[2], None

    def _alias_rules(self) -> bool:
        """Whether an alias rule may refuse anything (:func:`modelreg.validation.alias_rules`).

        Tag writes lock the model's row and read the documents of an aliased version only
        then; with no rule there is nothing a concurrent alias move could make them break,
        and the version's own lock (:meth:`lock_version`) serializes them with it."""
        return alias_rules(self.hook, self.settings)

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

    def set_alias(self, model_name: str, name: str, number: int) -> tuple[Alias, Model, bool]:
        """Point an alias at a ready version, creating or moving it in one update.

        The model's row is locked first, so concurrent moves of its aliases serialize: one
        wins last and every move is in the history.  Returns the alias, its model, and
        whether it was created.
        """
        check_alias(name)
        model = self.get_model(model_name, lock=True)
        # The version's row too (after the model's, the order lock_version takes them): a
        # version being finalized or deleted is waited for, and then read as it is.  The
        # alias comes in the same statement: aliases change only under the model's lock,
        # which this transaction holds, so the statement's snapshot sees the latest.
        row = self.db.execute(_version_and_alias_statement(), {
            "model_id": model.id, "version_number": number, "alias_name": name}).first()
        version, alias, previous = (None, None, None) if row is None else row
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
        created = alias is None
        if previous == number:
            return alias, model, False
        # The documents the rules see are read only when a rule may refuse the move.
        if self._alias_rules():
            problems = validate_alias(
                self.hook, self.model_document_of(model), name,
                self.version_document_of(version),
                None if created else self._version_document(model.normalized_name, "number",
                                                            previous),
                self.settings)
            if problems:
                raise refusal(problems, f"alias {name!r} of {model.name!r}")
        now = utcnow()
        self._write_alias(model, name, version, previous, created, now)
        if created:
            alias = Alias(model_id=model.id, name=name, version_id=version.id, updated_at=now,
                          updated_by=self.actor)
            make_transient_to_detached(alias)
            set_committed_value(alias, "version", version)
            self.db.add(alias)
        else:
            for key, value in (("version_id", version.id), ("version", version),
                               ("updated_at", now), ("updated_by", self.actor)):
                set_committed_value(alias, key, value)
        set_committed_value(model, "updated_at", now)
        set_committed_value(model, "updated_by", self.actor)
        self.db.expire(model, ["aliases"])
        self.db.expire(version, ["aliases"])
        self.record("alias.set" if created else "alias.moved", "alias",
                    f"{model.name}@{name}", model.name,
                    before=None if created else {"version": previous},
                    after={"version": number})
        if not created:
            self.queue_retention(model)  # the version it left may now be past keep_last
        return alias, model, created

    def _write_alias(self, model: Model, name: str, version: Version, previous: int | None,
                     created: bool, now: Any) -> None:
        """The alias's INSERT or UPDATE, its history row and the model's ``updated_at``, as
        Core statements rather than the unit of work's flush (which cost more CPU than the
        rest of the request's statements); on PostgreSQL one statement, the history and the
        model's update common table expressions of the alias's write."""
        params = {
            "history_model_id": model.id, "history_alias": name,
            "history_from_version": previous, "history_to_version": version.number,
            "history_actor": self.actor, "history_at": now,
            "touch_model_id": model.id, "touch_at": now, "touch_by": self.actor,
            "alias_model_id": model.id, "alias_name": name, "alias_version_id": version.id,
            "alias_updated_at": now, "alias_updated_by": self.actor,
        }
        statements = _alias_statements(self.db.get_bind().dialect.name in _DML_CTE_DIALECTS)
        for statement in statements[created]:
            self.db.execute(statement, params)

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
