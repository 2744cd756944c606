"""Test kit for modelreg and its plugins: an opt-in pytest plugin.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["modelreg.testing"]``.  It never loads
whatever plugins happen to be installed: :func:`make_app` registers exactly the plugins it is
given (the core's own, :data:`CORE_PLUGINS`, by default).

What it offers:

* :func:`make_app` — the WSGI app for given settings and plugins;
* :func:`make_plugin_manager` — a plugin manager of given plugins, to call hooks directly;
* :class:`TestDatabase` — a fresh, migrated database on SQLite, PostgreSQL or MariaDB that is
  dropped afterwards; :func:`clear_database` empties it between tests;
* :class:`HookRecorder` — records the hook calls an app makes;
* :class:`BlobStoreContract` — the behaviour every blob-store backend must show, servers'
  ways of sending its streams included (subclass it with a ``blob_store`` fixture);
* :func:`run_worker` — the background worker's due jobs and events of an app, run once in
  the test's thread (scans at finalize, event delivery);
* :class:`~modelreg.testing.server.LiveServer` (a real server process) and
  :class:`~modelreg.testing.s3.S3Server` (moto's S3-compatible server, for ``modelreg-s3``);
* fixtures ``modelreg_database`` (SQLite unless the project overrides it), ``modelreg_plugins``
  (override to add yours to ``modelreg_core_plugins``), ``modelreg_settings``,
  ``modelreg_app`` and ``testapp`` (a WebTest app over a database emptied after each
  test), ``hook_recorder``, and
  ``modelreg_s3_server`` (one S3 server for the session).

Database servers are found through ``MODELREG_TEST_POSTGRESQL_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and ``MODELREG_TEST_MARIADB_URL``
(default ``mysql+pymysql://root@127.0.0.1:3306/test``): the URL names a database to connect to
for creating and dropping the test databases.  An unreachable server skips its tests, except
when ``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pyramid.events import ContextFound

from .. import keys
from ..api import hookimpl
from ..config import configure
from ..db import transaction
from ..migrations import upgrade
from ..plugins import get_plugin_manager
from ..security.services import SecurityService
from ..worker.runner import Worker
from .contracts import BlobStoreContract, DirectUploadsContract

__all__ = [
    "BACKENDS",
    "CORE_PLUGINS",
    "BlobStoreContract",
    "DirectUploadsContract",
    "HookRecorder",
    "TestDatabase",
    "TransactionRecorder",
    "add_principal",
    "clear_database",
    "counting_statements",
    "hook_recorder",
    "in_ci",
    "make_app",
    "make_plugin_manager",
    "modelreg_app",
    "modelreg_core_plugins",
    "modelreg_database",
    "modelreg_plugins",
    "modelreg_s3_server",
    "modelreg_settings",
    "resolve_plugins",
    "routes_with_views",
    "run_worker",
    "testapp",
    "unavailable",
]

#: The core's own plugins: what the ``modelreg`` entry points of the core distribution load.
CORE_PLUGINS: tuple[str, ...] = ("modelreg.validation.builtin", "modelreg.storage.local")

BACKENDS = ("sqlite", "postgresql", "mariadb")
_SERVER_URLS = {
    "postgresql": ("MODELREG_TEST_POSTGRESQL_URL",
                   "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("MODELREG_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def _import(plugin: Any) -> Any:
    if isinstance(plugin, str):
        import importlib

        return importlib.import_module(plugin)
    return plugin


def resolve_plugins(plugins: Iterable[Any]) -> list[Any]:
    """Plugin objects for ``plugins`` (modules, objects, or dotted module names)."""
    return [_import(plugin) for plugin in plugins]


def make_app(settings: dict[str, Any], plugins: Iterable[Any] = CORE_PLUGINS) -> Any:
    """The registry's WSGI app with exactly ``plugins`` registered (no entry points)."""
    config = configure(settings, load_entrypoints=False, plugins=resolve_plugins(plugins))
    return config.make_wsgi_app()


def make_plugin_manager(
    plugins: Iterable[Any] = CORE_PLUGINS, settings: dict[str, Any] | None = None
) -> Any:
    """A plugin manager with exactly ``plugins`` registered (no entry points), to call a
    hook without an app: ``make_plugin_manager([my_plugin]).hook.modelreg_scan_file(...)``.

    Registration checks each implementation against the hook specifications, as start-up
    does.
    """
    return get_plugin_manager(settings or {}, load_entrypoints=False,
                              plugins=resolve_plugins(plugins))


def add_principal(app: Any, name: str, *, admin: bool = False,
                  grants: Iterable[tuple[str, str]] = (), scopes: Iterable[str] = ("admin",),
                  service: bool = False) -> str:
    """Create a principal in the database of an app made by :func:`make_app` (as
    ``modelreg users add``, ``grants add`` and ``tokens create`` do, in one transaction of
    its own and in this process, so a fixture need not start three commands) and return a
    new token of it.

    :param grants: ``(pattern, level)`` pairs, e.g. ``[("team-*", "write")]``.
    :param scopes: the token's scopes; the default ``admin`` caps nothing, the token may do
        all the principal may.
    """
    with transaction(app.registry) as db:
        security = SecurityService(db, actor="test-setup")
        security.create_principal(name, kind="service" if service else "user",
                                  is_admin=admin)
        for pattern, level in grants:
            security.create_grant(principal=name, pattern=pattern, level=level)
        _, token = security.create_token(name, scopes=list(scopes))
    return token


def run_worker(app: Any, settings: dict[str, Any] | None = None, *, jobs: int | None = None
               ) -> int:
    """Run the background worker of an app made by :func:`make_app` in this thread, on the
    app's database, blob store and plugins: every due job and event until none is left
    (``modelreg worker --once``), or only the next ``jobs`` jobs.

    :param settings: settings to add to the app's for this run
        (e.g. ``{"modelreg.scan.batch_seconds": "0"}``).
    :returns: how many jobs and deliveries were attempted.
    """
    worker = Worker.from_registry(app.registry, settings)
    if jobs is None:
        return worker.run_once()
    return sum(1 for _ in range(jobs) if worker.run_job())


def in_ci() -> bool:
    """Whether the run is CI's, where a missing database server is a failure."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    """Skip the current test, or fail it in CI."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: required services must be running)")
    pytest.skip(message)


@dataclass
class TestDatabase:
    """A database created for a test run and dropped by :meth:`drop`.

    :ivar backend: ``sqlite``, ``postgresql`` or ``mariadb``.
    :ivar url: the SQLAlchemy URL of the new database.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    backend: str
    url: str
    _admin_url: str | None = None
    _name: str | None = None
    _tmpdir: str | None = None
    _engines: list[sa.Engine] = field(default_factory=list)

    @classmethod
    def create(cls, backend: str, plugins: Iterable[Any] = CORE_PLUGINS, *,
               migrate: bool = True, installed: bool = False) -> TestDatabase:
        """Create an empty database on ``backend`` and run every migration on it (none with
        ``migrate=False``: an empty database, e.g. for another program to fill).

        :param plugins: the plugins whose migrations run besides the core's.
        :param installed: also those of every installed plugin (their entry points): the
            database of a server that loads them all, such as
            :class:`~modelreg.testing.server.LiveServer` with the settings of a deployment.

        :raises ConnectionError: when the backend's server cannot be reached.
        """
        if backend == "sqlite":
            tmpdir = tempfile.mkdtemp(prefix="modelreg-test-")
            db = cls(backend, f"sqlite:///{Path(tmpdir) / 'registry.sqlite'}", _tmpdir=tmpdir)
        else:
            variable, default = _SERVER_URLS[backend]
            admin_url = sa.engine.make_url(os.environ.get(variable, default))
            name = f"modelreg_test_{uuid.uuid4().hex[:12]}"
            admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    if backend == "mariadb":
                        conn.exec_driver_sql(
                            f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                        )
                    else:
                        conn.exec_driver_sql(f"CREATE DATABASE {name}")
            except sa.exc.OperationalError as exc:
                raise ConnectionError(f"{backend} server unreachable at {admin_url!r}") from exc
            finally:
                admin.dispose()
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            db = cls(backend, url, _admin_url=admin_url.render_as_string(hide_password=False),
                     _name=name)
        if migrate:
            if installed:  # the entry points (the core's own plugins among them) first
                pm = get_plugin_manager({})
                for plugin in resolve_plugins(plugins):
                    if not pm.is_registered(plugin):
                        pm.register(plugin)
            else:
                pm = get_plugin_manager({}, load_entrypoints=False,
                                        plugins=resolve_plugins(plugins))
            upgrade({"sqlalchemy.url": db.url}, pm.hook)
        return db

    def engine(self) -> sa.Engine:
        """An engine on the database, disposed by :meth:`drop`."""
        from ..db import get_engine

        engine = get_engine({"sqlalchemy.url": self.url})
        self._engines.append(engine)
        return engine

    def drop(self) -> None:
        """Drop the database (or delete the SQLite file) and everything in it."""
        for engine in self._engines:
            engine.dispose()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            return
        admin = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if self.backend == "postgresql":
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._name} WITH (FORCE)")
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._name}")
        finally:
            admin.dispose()


def clear_database(engine: sa.Engine) -> None:
    """Delete every row of every table but Alembic's, children first."""
    metadata = sa.MetaData()
    metadata.reflect(bind=engine)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name != "alembic_version":
                conn.execute(table.delete())


class HookRecorder:
    """Records every hook call of a plugin manager: ``calls`` holds ``(name, kwargs)``."""

    def __init__(self, pm: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._undo = pm.add_hookcall_monitoring(self._before, lambda *args: None)

    def _before(self, hook_name: str, hook_impls: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append((hook_name, dict(kwargs)))

    def named(self, name: str) -> list[dict[str, Any]]:
        """The keyword arguments of every call of hook ``name``."""
        return [kwargs for hook, kwargs in self.calls if hook == name]

    def close(self) -> None:
        """Stop recording."""
        self._undo()


class TransactionRecorder:
    """A plugin recording, for each request that reached a view, its route name, its method
    and whether it ran in pyramid_tm's transaction: ``seen`` holds ``(route, method,
    in_transaction)``.  Give it to :func:`make_app` with the plugins under test to check
    which of their views run as read-only views (``modelreg.api.add_read_only_view``:
    outside pyramid_tm)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []

    @hookimpl
    def modelreg_pyramid_configure(self, config: Any) -> None:
        """Subscribe to ``ContextFound``, which Pyramid sends inside pyramid_tm's tween."""
        config.add_subscriber(self.record, ContextFound)

    def record(self, event: Any) -> None:
        """Note the request of ``event``."""
        request = event.request
        route = request.matched_route
        self.seen.append((route.name if route is not None else "", request.method,
                          bool(request.environ.get("tm.active"))))

    def outside_transaction(self) -> set[tuple[str, str]]:
        """The ``(route, method)`` pairs seen running outside pyramid_tm."""
        return {(route, method) for route, method, active in self.seen if not active}


#: The statements :func:`counting_statements` leaves out: transaction control.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@contextmanager
def counting_statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block, in order, transaction control
    (:data:`TRANSACTION_CONTROL`) left out: for budgets of statements per request (an app's
    writer engine shares the reading engine's events, so ``app.registry["db_engine"]``
    sees both)."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        if not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def routes_with_views(app: Any, prefix: str, method: str = "GET") -> set[str]:
    """The names of ``app``'s routes starting with ``prefix`` that have a view for
    ``method`` (from Pyramid's introspector)."""
    found = set()
    for item in app.registry.introspector.get_category("views"):
        view = item["introspectable"]
        methods = view["request_methods"]
        methods = (methods,) if isinstance(methods, str) else methods or ()
        if str(view["route_name"] or "").startswith(prefix) and method in methods:
            found.add(view["route_name"])
    return found


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def modelreg_core_plugins() -> tuple[str, ...]:
    """The core's own plugins (:data:`CORE_PLUGINS`), for a ``modelreg_plugins`` override in
    ``conftest.py`` that adds yours without importing this module there: imported by the
    ``conftest.py`` before ``pytest_plugins`` loads it, the kit is not assertion-rewritten and
    pytest warns (``PytestAssertRewriteWarning``)."""
    return CORE_PLUGINS


@pytest.fixture(scope="session")
def modelreg_plugins(modelreg_core_plugins: tuple[str, ...]) -> tuple[Any, ...]:
    """The plugins the test app registers; override to add your own (take
    ``modelreg_core_plugins`` and add to it)."""
    return modelreg_core_plugins


@pytest.fixture(scope="session")
def modelreg_database(modelreg_plugins: tuple[Any, ...]) -> Iterator[TestDatabase]:
    """A migrated SQLite database for the session; override to test on other backends."""
    db = TestDatabase.create("sqlite", modelreg_plugins)
    yield db
    db.drop()


@pytest.fixture(scope="session")
def modelreg_settings(
    modelreg_database: TestDatabase, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Settings of the test app; override to add plugin settings.

    The app is open like ``development.ini`` (``modelreg.auth.anonymous = write``), so that
    tests of other things need no tokens; build an app with ``none`` to test authorization.
    Blobs go to the built-in local backend, in a temporary directory of the session.
    """
    return {
        "sqlalchemy.url": modelreg_database.url,
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("modelreg-blobs")),
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "write",
    }


@pytest.fixture(scope="session")
def modelreg_app(
    modelreg_settings: dict[str, Any], modelreg_plugins: tuple[Any, ...]
) -> Iterator[Any]:
    """The WSGI app over the session's database; its connections are closed afterwards."""
    app = make_app(modelreg_settings, modelreg_plugins)
    yield app
    app.registry[keys.DB_ENGINE].dispose()


@pytest.fixture
def testapp(modelreg_app: Any, modelreg_database: TestDatabase) -> Iterator[Any]:
    """A WebTest app; the database is emptied after the test."""
    import webtest

    yield webtest.TestApp(modelreg_app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(modelreg_app.registry[keys.DB_ENGINE])


@pytest.fixture(scope="session")
def modelreg_s3_server() -> Iterator[Any]:
    """A running :class:`~modelreg.testing.s3.S3Server` with the bucket ``modelreg-test``;
    ``.settings()`` gives app settings of a store under a fresh key prefix.  Without moto
    (the ``test`` extra) it skips, or fails when ``CI=true``."""
    from .s3 import S3Server, moto_installed

    if not moto_installed():
        unavailable("moto[server] is not installed (it comes with modelreg's test extra)")
    with S3Server() as server:
        yield server


@pytest.fixture
def hook_recorder(modelreg_app: Any) -> Iterator[HookRecorder]:
    """Records the hook calls the test app makes during the test."""
    recorder = HookRecorder(modelreg_app.registry[keys.PLUGIN_MANAGER])
    yield recorder
    recorder.close()
