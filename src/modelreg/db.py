"""Engines and sessions: one session per request, owned by the transaction manager.

Nothing here is built at import time.  :func:`includeme` builds the engine from the settings
and gives every request a ``request.dbsession`` joined to ``request.tm`` (pyramid_tm commits or
aborts it; views never commit by hand), except the requests of views declared read-only
(:func:`add_read_only_view`), whose session belongs to no transaction manager, refuses to
write and is closed when the request ends.  ``request.environ["app.dbsession"]`` wins when set,
which is the seam tests use.

SQLite is made fit for a multi-threaded server here, in one place: WAL, a busy timeout,
foreign keys, case-sensitive ``LIKE`` (as on the other databases), and transactions of writing
requests opened with ``BEGIN IMMEDIATE`` so that they queue on the busy timeout instead of
failing on their first write.  MySQL and MariaDB run in ``READ COMMITTED``, as PostgreSQL
does (unless ``sqlalchemy.isolation_level`` says otherwise): under InnoDB's default
``REPEATABLE READ`` a plain read after taking a row lock sees the transaction's first snapshot,
not what the transaction it waited for has just committed, and counts checked under that lock
(a model's versions against its quota) would be stale.
"""

from __future__ import annotations

import collections
import functools
import select
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import transaction as zope_transaction
import zope.sqlalchemy
from pyramid.config import Configurator
from pyramid.interfaces import IRoutesMapper
from pyramid.request import Request
from pyramid.settings import asbool
from pyramid.urldispatch import RoutesMapper
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import keys
from .settings import (
    API_MAX_JSON_BODY,
    POSTGRESQL_MAX_PARALLEL_WORKERS_PER_GATHER,
    POSTGRESQL_PLAN_CACHE_MODE,
    SQLITE_BUSY_TIMEOUT_MS,
)

#: Execution option set on the engine that writing requests use.
WRITER_OPTION = "modelreg_writer"
#: Bodies up to this size are kept in memory so that their requests can be retried.
MAX_RETRIED_BODY_SETTING = API_MAX_JSON_BODY
MAX_RETRIED_BODY = 1024 * 1024
#: HTTP methods whose requests only read.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Where the (route name, method) pairs of streaming views are kept in the registry.
STREAMING_KEY = keys.DB_STREAMING
#: Where the (route name, method) pairs of read-only views are kept in the registry.
READ_ONLY_KEY = keys.DB_READ_ONLY
#: Set in the WSGI environ of a request that :func:`tm_activate_hook` kept out of pyramid_tm.
READ_ONLY_REQUEST = "modelreg.read_only"


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Transactions begin with the BEGIN of _sqlite_begin below (pysqlite's own
        # transaction handling would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA case_sensitive_like = ON")
        cursor.close()

    # The dialect of this engine (its own instance) begins each transaction; a listener of
    # the engine's "begin" event did, but any listener of a connection event makes every
    # connection of the engine join the engine's events and call them on each statement,
    # begin and rollback: about a tenth of a read's instructions (docs/performance.md, "Read
    # path").  Writers begin with BEGIN IMMEDIATE instead (writer_engine).
    engine.dialect.do_begin = _sqlite_begin  # type: ignore[method-assign]


#: Set by a writing engine's begin listener on the connection it begins (its pool record's
#: ``info``) and taken by :func:`_sqlite_begin`: this transaction begins ``IMMEDIATE``.
_BEGIN_IMMEDIATE = "modelreg.begin_immediate"


def _sqlite_begin(dbapi_connection: Any) -> None:
    """The dialect's ``do_begin`` on SQLite: ``BEGIN`` straight to the driver (SQLAlchemy's
    execution of a statement, its context, events and result, cost as much as the read that
    follows; docs/performance.md, "Read path"), ``BEGIN IMMEDIATE`` for a writer's
    connection (:func:`_sqlite_writer_begin`).  The driver's errors are wrapped by
    SQLAlchemy ("database is locked" is an OperationalError, which is retried)."""
    immediate = dbapi_connection.info.pop(_BEGIN_IMMEDIATE, False)
    dbapi_connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_writer_begin(conn: sa.Connection) -> None:
    """The ``begin`` listener of a writing engine on SQLite (:func:`writer_engine`), which
    runs just before the dialect's ``do_begin``: its transactions begin with ``BEGIN
    IMMEDIATE``, so that they queue on the busy timeout instead of failing on their first
    write."""
    conn.connection.info[_BEGIN_IMMEDIATE] = True


#: SQLSTATEs (PostgreSQL) and error numbers (MySQL/MariaDB) of transient conflicts.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_TRANSIENT_MYSQL_ERRORS = frozenset({1205, 1213})


def is_lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection lost while a statement ran (the database restarted,
    the connection was cut): the transaction was never committed, so running the request again
    on a new connection is as safe as after a deadlock.  A connection lost during ``COMMIT``
    (no statement), or during a statement that commits itself (:func:`execute_alone`), is
    not: whether the transaction landed is unknown."""
    return (isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
            and exc.statement is not None
            and not exc.statement.lstrip()[:6].upper().startswith("COMMIT")
            and not getattr(exc, _COMMITTING, False))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database conflict that succeeds when the transaction is retried."""
    if not isinstance(exc, sa.exc.DBAPIError) or exc.orig is None:
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL_ERRORS:
        return True
    return isinstance(exc, sa.exc.OperationalError) and "database is locked" in str(orig)


#: SQLSTATE classes of a database that cannot be reached or is going away: connection
#: exceptions (08), insufficient resources (53), operator intervention such as a shutdown or
#: a server still starting (57P).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
#: MySQL/MariaDB: too many connections, shutdown in progress, cannot connect, server gone,
#: connection lost.
_UNAVAILABLE_MYSQL_ERRORS = frozenset({1040, 1053, 2002, 2003, 2006, 2013})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (down, restarting, full of
    connections, the connection dropped, no free connection in the pool).

    Such a request is answered 503 and not retried in the app: if a connection dropped
    during ``COMMIT``, whether the transaction landed is unknown, so the client decides.
    """
    if isinstance(exc, sa.exc.TimeoutError):  # the pool had no connection to give
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _UNAVAILABLE_MYSQL_ERRORS
    # Failing to connect at all (refused, reset, timed out) comes without a SQLSTATE.
    return isinstance(exc, sa.exc.OperationalError) and any(
        words in str(orig).lower() for words in _CONNECT_FAILURES)


_CONNECT_FAILURES = ("connection refused", "could not connect", "connection failed",
                     "server closed the connection", "connection reset", "timeout expired",
                     "the database system is", "terminating connection")


#: PostgreSQL's ``plan_cache_mode`` for the app's connections (empty: the server's own).
PLAN_CACHE_MODE_SETTING = POSTGRESQL_PLAN_CACHE_MODE
#: psycopg prepares a statement on the server after five executions, and PostgreSQL then
#: tries a generic plan, one made without the parameters' values: for a search, a plan that
#: knows neither the ``LIKE`` prefix (so no index range) nor the ``LIMIT`` — 117 ms instead of
#: 1 ms for the first page of 100,000 models, 7 ms instead of 1 for a prefix.  Planning each
#: execution with its values costs a fraction of a millisecond; prepared statements still
#: save the parsing.
DEFAULT_PLAN_CACHE_MODE = "force_custom_plan"
#: PostgreSQL's ``max_parallel_workers_per_gather`` for the app's connections (empty: the
#: server's own).  The app's statements fetch a page or a row: starting a parallel worker
#: costs more than it saves.  With the server's default (2), a tag-filtered first page of
#: 100,000 models was planned as a parallel walk of the name index, and the worker's start
#: alone took 12 ms of its 26 (11 ms without).
PARALLEL_WORKERS_SETTING = POSTGRESQL_MAX_PARALLEL_WORKERS_PER_GATHER
DEFAULT_PARALLEL_WORKERS = "0"
#: The PostgreSQL parameters set on every connection of the app: name -> (ini setting,
#: default).  An empty setting leaves the server's value.
POSTGRESQL_PARAMETERS = {
    "plan_cache_mode": (PLAN_CACHE_MODE_SETTING, DEFAULT_PLAN_CACHE_MODE),
    "max_parallel_workers_per_gather": (PARALLEL_WORKERS_SETTING, DEFAULT_PARALLEL_WORKERS),
}


def postgresql_options(settings: dict[str, Any]) -> str:
    """The libpq ``options`` that set :data:`POSTGRESQL_PARAMETERS` from ``settings``."""
    options = []
    for name, (setting, default) in POSTGRESQL_PARAMETERS.items():
        value = str(settings.get(setting, default)).strip()
        if value:
            if not value.replace("_", "").isalnum():
                raise ValueError(f"{setting} = {value!r} is not a PostgreSQL setting value")
            options.append(f"-c {name}={value}")
    return " ".join(options)


def get_engine(settings: dict[str, Any], prefix: str = "sqlalchemy.") -> Engine:
    """Build the engine from ``sqlalchemy.*`` settings, tuned for the database it talks to.

    On PostgreSQL, connections plan every statement with its parameters' values
    (``modelreg.postgresql.plan_cache_mode``, default ``force_custom_plan``) and without
    parallel workers (``modelreg.postgresql.max_parallel_workers_per_gather``, default 0),
    unless the URL passes ``options`` itself.
    """
    url = sa.engine.make_url(settings[prefix + "url"])
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            raise ValueError("modelreg needs a file-backed SQLite database, not :memory:")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        # pool_pre_ping (default on) is the cheaper ping of _ping_idle_connections.
        pre_ping = asbool(settings.get(prefix + "pool_pre_ping", True))
        settings = {k: v for k, v in settings.items() if k != prefix + "pool_pre_ping"}
        kwargs["pool_pre_ping"] = False
        if (url.get_backend_name() in ("mysql", "mariadb")
                and not settings.get(prefix + "isolation_level")):
            kwargs["isolation_level"] = "READ COMMITTED"
        if url.get_backend_name() == "postgresql" and "options" not in url.query:
            options = postgresql_options(settings)
            if options:
                kwargs["connect_args"] = {"options": options}
    engine = sa.engine_from_config(settings, prefix, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, int(settings.get(SQLITE_BUSY_TIMEOUT_MS, 30000)))
    elif pre_ping:
        _ping_idle_connections(engine, PING_AFTER_IDLE_SECONDS)
    return engine


#: A pooled connection is pinged before use only after it lay idle this long (seconds).
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "modelreg.idle_since"


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, only for connections idle more than ``idle_seconds``.

    The pre-ping cost a round trip per request (docs/performance.md, "Write path").  A
    connection in use a moment ago is not pinged: if the database restarted since, its first
    statement fails as a disconnect, which invalidates every older pooled connection and is
    retried like a deadlock (:func:`is_lost_connection`).  A connection that lay idle (a quiet
    server, the worker) is pinged as before, so the first request after a restart needs no
    retry.
    """
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def on_checkin(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        since = connection_record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # a new connection, or one used a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool replaces it (and every connection older than it) and tries again.
                raise sa.exc.InvalidatePoolError() from exc
            raise


#: Where a session made by :func:`get_session_factory` keeps the zope.sqlalchemy events of
#: its transaction manager.
ZOPE_EVENTS_KEY = "modelreg.zope_events"


def _relay(name: str, session_of: Any) -> Any:
    """A listener that hands event ``name`` to the session's own ZopeTransactionEvents."""

    def relay(first: Any, *args: Any) -> None:
        events = session_of(first).info.get(ZOPE_EVENTS_KEY)
        if events is not None:
            getattr(events, name)(first, *args)

    return relay


def _session_itself(session: Session) -> Session:
    return session


def _session_of_context(context: Any) -> Session:
    return context.session


#: The events zope.sqlalchemy.register listens to, and how each finds its session.
_ZOPE_EVENTS = {
    "after_begin": _session_itself,
    "after_attach": _session_itself,
    "after_flush": _session_itself,
    "before_commit": _session_itself,
    "after_bulk_update": _session_of_context,
    "after_bulk_delete": _session_of_context,
    "do_orm_execute": _session_of_context,
}


def get_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; sessions keep objects usable after commit.

    Its sessions belong to a class of their own on which zope.sqlalchemy's events are
    listened to once, relayed to the transaction manager each session names in its ``info``
    (:func:`get_tm_session`): ``zope.sqlalchemy.register`` on every session would add seven
    listeners per request, a sixth of the CPU of a simple read.
    """
    session_class = type("TmSession", (Session,), {"__doc__": "A session of modelreg."})
    for name, session_of in _ZOPE_EVENTS.items():
        event.listen(session_class, name, _relay(name, session_of))
    session_class.modelreg_relays_zope_events = True  # type: ignore[attr-defined]
    return sessionmaker(bind=engine, expire_on_commit=False, class_=session_class)


class ReadOnlyRequestError(RuntimeError):
    """A write through the session of a request served outside pyramid_tm
    (:func:`add_read_only_view`): nothing would ever commit it."""


def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    raise ReadOnlyRequestError(
        "this request's view was declared read-only (modelreg.db.add_read_only_view): "
        "its session cannot write")


def _refuse_orm_writes(state: Any) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        _refuse_flush(state.session, None, None)


def get_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory for the requests of read-only views (:func:`add_read_only_view`):
    no transaction manager; the session is rolled back and closed when the request ends.

    Its sessions refuse to write (:class:`ReadOnlyRequestError`): a flush of anything, an
    ORM ``INSERT``/``UPDATE``/``DELETE`` statement, and :func:`mark_changed` (which every
    Core write of the app and its plugins calls) raise, so that a view declared read-only
    by mistake fails loudly instead of losing its writes to the rollback.
    """
    session_class = type("ReadOnlySession", (Session,), {
        "__doc__": "A session of a read-only request of modelreg."})
    event.listen(session_class, "before_flush", _refuse_flush)
    event.listen(session_class, "do_orm_execute", _refuse_orm_writes)
    session_class.modelreg_read_only = True  # type: ignore[attr-defined]
    return sessionmaker(bind=engine, expire_on_commit=False, class_=session_class)


def writer_engine(engine: Engine) -> Engine:
    """``engine`` marked for writing sessions: on SQLite they begin with ``BEGIN IMMEDIATE``
    (a listener of this engine's ``begin`` event only: its connections call the engine's
    events, the reading engine's do not)."""
    if engine.get_execution_options().get(WRITER_OPTION):
        return engine  # a writer already (its begin listener would run twice)
    writer = engine.execution_options(**{WRITER_OPTION: True})
    if engine.dialect.name == "sqlite":
        event.listen(writer, "begin", _sqlite_writer_begin)
    return writer


def get_tm_session(
    session_factory: sessionmaker[Session], transaction_manager: Any, bind: Engine | None = None
) -> Session:
    """A session joined to ``transaction_manager``: committed or aborted with it.

    Scripts (CLI commands, the worker) use this too, with their own
    ``transaction.TransactionManager``; they pass ``bind=writer_engine(engine)`` to write.
    """
    dbsession = session_factory(bind=bind) if bind is not None else session_factory()
    if getattr(type(dbsession), "modelreg_relays_zope_events", False):
        dbsession.info[ZOPE_EVENTS_KEY] = zope.sqlalchemy.ZopeTransactionEvents(
            transaction_manager=transaction_manager)
    else:  # a factory not made by get_session_factory
        zope.sqlalchemy.register(dbsession, transaction_manager=transaction_manager)
    return dbsession


def database_parts(engine: Engine, session_factory: Any | None = None) -> dict[str, Any]:
    """What :func:`transaction` needs of a registry, for code that holds an engine of its
    own rather than the app's registry (the worker's own engine, gc's batches): the engine,
    its writer and a session factory, under the keys of :mod:`modelreg.keys`."""
    return {keys.DB_ENGINE: engine, keys.DB_WRITER_ENGINE: writer_engine(engine),
            keys.DB_SESSION_FACTORY: session_factory or get_session_factory(engine)}


@contextmanager
def transaction(registry: Any, *, write: bool = True) -> Iterator[Session]:
    """The one way to run a unit of work outside a request's own transaction: a session in a
    transaction of its own (its own ``transaction.TransactionManager``), committed when the
    block ends and aborted when it raises.  Nothing commits by hand.

    :param registry: the app's registry (``request.registry``, ``config.registry``), holding
        the engines and the session factory that :func:`includeme` built.
    :param write: bind to the writing engine (on SQLite its transactions begin with
        ``BEGIN IMMEDIATE``, :func:`writer_engine`); ``False`` to only read.
    """
    tm = zope_transaction.TransactionManager(explicit=True)
    with tm:
        yield get_tm_session(registry[keys.DB_SESSION_FACTORY], tm,
                             registry[keys.DB_WRITER_ENGINE] if write else registry[keys.DB_ENGINE])


def mark_changed(dbsession: Session) -> None:
    """Tell the session's transaction manager that it wrote through a Core statement (which
    zope.sqlalchemy does not see), so that the transaction commits rather than rolls back."""
    if getattr(dbsession, "modelreg_read_only", False):
        _refuse_flush(dbsession, None, None)
    events = dbsession.info.get(ZOPE_EVENTS_KEY)
    if events is not None:
        events.mark_changed(dbsession)
    else:
        zope.sqlalchemy.mark_changed(dbsession)


#: libpq's ``PQTRANS_IDLE``: a connection outside any transaction block.
_PG_IDLE = 0
#: Set on the error of a statement that commits itself (:func:`execute_alone`).
_COMMITTING = "modelreg_committing"


def execute_alone(dbsession: Session, statement: Any, params: dict[str, Any]) -> Any:
    """Run ``statement``, a write the caller promises is the whole of the transaction of
    ``dbsession``, and mark the session changed (:func:`mark_changed`); its result.

    Where the statement is the transaction's first on PostgreSQL, it runs outside a
    transaction block, in the transaction PostgreSQL makes for a statement alone: atomic and
    durable as the same statement between ``BEGIN`` and ``COMMIT``, without their two round
    trips (the session's commit then has nothing to send).  Anywhere else (another database,
    a statement already run in this transaction, an isolation level or access mode
    configured for the engine's transactions, a driver other than psycopg) it runs in the
    session's transaction as any other statement.

    The promise is what makes this safe: a statement the same request ran after this one
    would be a transaction of its own, so only a command that is its request's only write,
    called by the view that knows it, asks for this (``alone=True`` of
    :meth:`modelreg.registry.commands.RegistryCommands.create_version`).
    """
    mark_changed(dbsession)
    return _outside_transaction(dbsession.connection(), statement, params, writes=True)


def read_alone(connection: sa.Connection, statement: Any, params: dict[str, Any]) -> Any:
    """Run ``statement``, which only reads, on ``connection``: on PostgreSQL, where it is the
    transaction's first statement, outside a transaction block (as :func:`execute_alone`),
    so that it sends no ``BEGIN`` and leaves the connection outside a transaction; anywhere
    else as any other statement.

    A read needs no transaction of its own: at READ COMMITTED (PostgreSQL's default; an
    engine with an isolation level of its own never gets here) each statement sees the
    database as of its own start anyway, and a read commits nothing.  What the request runs
    after it then begins its transaction, and a request whose one write commits itself
    (:func:`execute_alone`) stays one round trip with this read before it (the token's,
    :func:`modelreg.security.tokens.authenticate_token`).
    """
    return _outside_transaction(connection, statement, params, writes=False)


def _outside_transaction(connection: sa.Connection, statement: Any, params: dict[str, Any],
                         *, writes: bool) -> Any:
    """:func:`execute_alone` and :func:`read_alone`: the statement with psycopg's autocommit
    on where the connection is idle, and off again at once (a lost connection is
    invalidated, never pooled in autocommit).  A write lost meanwhile may have landed: its
    error is marked not to be retried (:func:`is_lost_connection`); a lost read may be."""
    if (connection.dialect.name, connection.dialect.driver) != ("postgresql", "psycopg"):
        return connection.execute(statement, params)
    driver = connection.connection.dbapi_connection
    if (driver.info.transaction_status != _PG_IDLE or driver.isolation_level is not None
            or driver.read_only is not None or driver.deferrable is not None
            or _input_waiting(driver)):
        return connection.execute(statement, params)
    driver.autocommit = True
    try:
        return connection.execute(statement, params)
    except sa.exc.DBAPIError as exc:
        if writes:
            setattr(exc, _COMMITTING, True)  # lost, it may have landed: not to retry
        raise
    finally:
        if driver.info.transaction_status == _PG_IDLE:
            driver.autocommit = False
        else:  # the connection is lost: never back to the pool in autocommit
            connection.invalidate()


def _input_waiting(driver: Any) -> bool:
    """Whether the server sent this idle connection something, which is mostly that it
    terminated it (a restart, ``pg_terminate_backend``): one ``poll`` with no wait (not
    ``select``, which refuses descriptors past 1023).  Such a connection's statement fails
    before it can have run, so it goes the way a retried request can take, in a transaction
    (:func:`is_lost_connection`)."""
    poller = select.poll()
    poller.register(driver.fileno(), select.POLLIN)
    return bool(poller.poll(0))


#: Where a read-only session keeps the connection of :func:`plain_connection` (its ``info``).
PLAIN_CONNECTION_KEY = "modelreg.plain_connection"


def plain_connection(dbsession: Session, *, flush: bool = True) -> sa.Connection:
    """The connection on which to run Core statements of plain columns that only read, for
    ``dbsession``'s unit of work: its own connection (``dbsession.connection()``), its
    pending changes flushed first as the ORM's autoflush would (unless not ``flush``).

    A read-only request's session (:func:`get_read_session_factory`) that has not begun a
    transaction yet opens a connection of its engine instead, and binds itself to it: what
    it then reads through the ORM runs on that connection, in the same transaction (rolled
    back and returned to the pool when the request ends).  A read of plain rows then costs
    no session transaction (SQLAlchemy's ``SessionTransaction``, its connection bookkeeping
    and its close): about a tenth of an anonymous read's instructions (docs/performance.md,
    "Read path").
    """
    if flush:
        dbsession.flush()
    connection = dbsession.info.get(PLAIN_CONNECTION_KEY)
    if connection is not None:
        return connection  # type: ignore[no-any-return]
    if getattr(dbsession, "modelreg_read_only", False) and not dbsession.in_transaction():
        connection = dbsession.get_bind().connect()
        dbsession.info[PLAIN_CONNECTION_KEY] = connection
        # The session joins the connection's transaction ("conservative_savepoint": without
        # a savepoint), and leaves the connection open when closed: close_read_session.
        dbsession.bind = connection
        return connection
    return dbsession.connection()


@functools.cache
def _row_type(names: tuple[str, ...]) -> Any:
    return collections.namedtuple("PlainRow", names)  # type: ignore[misc]


def plain_row_type(statement: Any) -> Any:
    """A named tuple class with the columns of ``statement`` (a Core ``SELECT`` or
    ``UNION``), one per set of names: ``row_type._make(row)`` for each row of its result
    gives the same values under the same names as the result's rows.

    Reading a column of SQLAlchemy's ``Row`` by name (``row.number``) raises and catches an
    ``AttributeError`` inside (the name is looked up on its type first): about 0.35 µs,
    against 0.05 µs for a named tuple's field after a 0.35 µs conversion.  Worth it for a
    row whose columns are read several times (docs/performance.md, "Read path").
    """
    return _row_type(tuple(column.key for column in statement.selected_columns))


def plain_rows(dbsession: Session, statement: Any, params: dict[str, Any], *,
               flush: bool = True, alone: bool = False) -> list[Any]:
    """The rows of ``statement`` (plain columns, only reading) as named tuples
    (:func:`plain_row_type`), run on :func:`plain_connection` (``flush`` as there); with
    ``alone``, through :func:`read_alone`."""
    row_type = plain_row_type(statement)
    connection = plain_connection(dbsession, flush=flush)
    rows = (read_alone(connection, statement, params) if alone
            else connection.execute(statement, params))
    return [row_type._make(row) for row in rows]


def close_read_session(dbsession: Session) -> None:
    """Close a read-only request's session: roll back its transaction and return its
    connection (that of :func:`plain_connection` too) to the pool.

    A session that never began a transaction holds no connection and has read nothing: it
    is left to the garbage collector (``Session.close`` would only empty its identity map,
    about as many instructions as the read's rollback)."""
    try:
        if dbsession.in_transaction():
            dbsession.close()
    finally:
        connection = dbsession.info.pop(PLAIN_CONNECTION_KEY, None)
        if connection is not None:
            connection.close()


def _close_read_session(dbsession: Session) -> Callable[[Request], None]:
    def close(request: Request) -> None:
        close_read_session(dbsession)

    return close


def _dbsession(request: Request) -> Session:
    dbsession = request.environ.get("app.dbsession")
    if dbsession is None:
        registry = request.registry
        if request.environ.get(READ_ONLY_REQUEST) and "tm.active" not in request.environ:
            dbsession = registry[keys.DB_READ_SESSION_FACTORY]()
            request.add_finished_callback(_close_read_session(dbsession))
            return dbsession
        writes = request.method not in READ_METHODS and not is_streaming(request)
        dbsession = get_tm_session(
            registry[keys.DB_SESSION_FACTORY],
            request.tm,
            registry[keys.DB_WRITER_ENGINE] if writes else registry[keys.DB_ENGINE],
        )
    return dbsession


def add_streaming_view(config: Configurator, route_name: str, method: str) -> None:
    """Mark the view of ``route_name`` and ``method`` as one that streams a body to storage.

    Such a request is never retried (a retry would repeat storage writes), and its
    ``request.dbsession`` only reads (on SQLite it takes no write lock while the body
    streams); the view writes through a short transaction of its own once the bytes are
    stored.
    """
    config.registry.setdefault(STREAMING_KEY, set()).add((route_name, method))


def is_streaming(request: Request) -> bool:
    """Whether ``request`` goes to a view marked with :func:`add_streaming_view`."""
    streaming = request.registry.get(STREAMING_KEY)
    if not streaming or request.method in READ_METHODS:
        return False
    route = _matched_route(request)  # pyramid_retry asks before the router matched it
    return route is not None and (route.name, request.method) in streaming


def add_read_only_view(config: Configurator, route_name: str, method: str = "GET") -> None:
    """Mark the view of ``route_name`` and ``method`` (``GET``, and ``HEAD`` with it) as one
    that only reads: its requests run outside pyramid_tm (:func:`tm_activate_hook`).

    Such a request's ``request.dbsession`` belongs to no transaction manager: it is rolled
    back and closed when the request ends (a finished callback), and it refuses to write
    (:func:`get_read_session_factory`).  That saves the transaction package's two-phase
    commit, zope.sqlalchemy's data manager and their events on every read
    (docs/performance.md, "Read path").  Only views that never write (no audit record,
    no lazily created row, no after-commit hook) may be marked, and only views that wait on
    nothing but the database: under modelreg's Waitress their requests take turns, one
    process running ``reads_at_once`` of them at a time (:class:`modelreg.servers.ReadTurns`),
    so a view that waited on the network would hold up every other read.
    """
    read_only = config.registry.setdefault(READ_ONLY_KEY, set())
    read_only.add((route_name, method))
    if method == "GET":
        read_only.add((route_name, "HEAD"))


class MatchOnceRoutesMapper(RoutesMapper):
    """Pyramid's routes mapper, matching a request's route once: what asks for the route
    before the router does (:func:`tm_activate_hook`, :func:`is_streaming`) and the router
    share one walk of the route list (156 routes with the plugins; about 5 µs a walk).

    The match is kept on the request with its method and path, and made again if either
    changed since.
    """

    def __call__(self, request: Request) -> dict[str, Any]:
        """The route and match of ``request``, as :class:`RoutesMapper` finds them."""
        key = (request.environ.get("REQUEST_METHOD"), request.environ.get("PATH_INFO"))
        cached = request.__dict__.get(_MATCHED_KEY)
        if cached is not None and cached[0] == key:
            return cached[1]  # type: ignore[no-any-return]
        info = super().__call__(request)
        request.__dict__[_MATCHED_KEY] = (key, info)
        return info  # type: ignore[no-any-return]


_MATCHED_KEY = "_modelreg_matched_route"


def _matched_route(request: Request) -> Any:
    route = getattr(request, "matched_route", None)
    if route is None:  # the tweens run before the router matched the route
        try:
            route = request.registry.getUtility(IRoutesMapper)(request)["route"]
        except UnicodeDecodeError:  # a path that is not UTF-8: refused with a 400 later
            return None
    return route


#: The WSGI environ key of a request's read turn (:class:`modelreg.servers.ReadTurn`), which
#: modelreg's Waitress gives ``GET`` and ``HEAD`` requests.
READ_TURN_KEY = "modelreg.read_turn"


def give_up_read_turn(environ: MutableMapping[str, Any]) -> None:
    """Give up the read turn of the request of ``environ``, if it holds one
    (:class:`modelreg.servers.ReadTurns`): for a request that is not a read-only view's,
    once :func:`tm_activate_hook` knows."""
    turn = environ.get(READ_TURN_KEY)
    if turn is not None:
        turn.give_up()


def tm_activate_hook(request: Request) -> bool:
    """pyramid_tm's ``tm.activate_hook``: whether ``request`` runs in a transaction of
    pyramid_tm — every request but those to a view marked with :func:`add_read_only_view`.

    The one place that decides whether a request is a read-only view's: the others give up
    the read turn that modelreg's Waitress gave their ``GET`` or ``HEAD``
    (:class:`modelreg.servers.ReadTurns`), read-only ones keep it until they are answered."""
    read_only = request.registry.get(READ_ONLY_KEY)
    if read_only and request.method in ("GET", "HEAD"):
        route = _matched_route(request)
        if route is not None and (route.name, request.method) in read_only:
            request.environ[READ_ONLY_REQUEST] = True
            return False
    # Not a read-only view's request: it may wait on more than the database (storage, a
    # plugin), so it gives up its read turn, if it took one (modelreg.servers.ReadTurns).
    give_up_read_turn(request.environ)
    return True


def retry_activate_hook(request: Request) -> int | None:
    """How many attempts pyramid_retry may make at ``request``.

    Retrying needs a re-readable body, which pyramid_retry makes by copying it.  Only
    body-less requests and small JSON bodies are retried (copied in memory); anything larger
    and every streaming view (uploads) gets exactly one attempt, since copying the body would
    cost what the upload costs and a retry would repeat storage writes.
    """
    environ = request.environ
    if request.method in READ_METHODS:
        if (environ.get("CONTENT_LENGTH") in (None, "", "0")
                and "HTTP_TRANSFER_ENCODING" not in environ):
            # No body: what pyramid_retry's make_body_seekable would make of it (a copy of
            # the server's stream, read to its end), made at once.
            request.body = b""
        return None
    limit = int(request.registry.settings.get(MAX_RETRIED_BODY_SETTING, MAX_RETRIED_BODY))
    length = request.content_length
    if is_streaming(request):
        return 1
    if length == 0:
        return None
    if length is None or length > limit:
        return 1
    request.request_body_tempfile_limit = limit
    return None


def includeme(config: Configurator) -> None:
    """Build the engine and session factory and add ``request.dbsession``."""
    settings = config.get_settings()
    settings.setdefault("tm.manager_hook", "pyramid_tm.explicit_manager")
    # pyramid_tm would authenticate the caller to annotate the transaction, above the
    # exception views: a refused token would escape as a bare 500 instead of a JSON 401.
    settings.setdefault("tm.annotate_user", False)
    settings.setdefault("tm.activate_hook", tm_activate_hook)
    config.include("pyramid_tm")
    settings.setdefault("retry.activate_hook", retry_activate_hook)
    config.include("pyramid_retry")
    engine = get_engine(settings)
    config.registry[keys.DB_SESSION_FACTORY] = get_session_factory(engine)
    config.registry[keys.DB_READ_SESSION_FACTORY] = get_read_session_factory(engine)
    config.registry[keys.DB_ENGINE] = engine
    config.registry[keys.DB_WRITER_ENGINE] = writer_engine(engine)
    config.add_request_method(_dbsession, "dbsession", reify=True)
    if config.registry.queryUtility(IRoutesMapper) is None:  # no route added yet
        config.registry.registerUtility(MatchOnceRoutesMapper(), IRoutesMapper)
