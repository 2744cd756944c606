"""Every hook a plugin can implement.  One prefix, ``modelreg_``, one module.

Implement a hook by decorating a function of the same name with :data:`modelreg.api.hookimpl`
in a module that your distribution lists in the ``modelreg`` entry-point group.  Call
arguments are passed by keyword, and an implementation may accept fewer arguments than the
specification lists, so specifications can grow without breaking plugins.

Values handed to hooks are plain data (dicts shaped like the REST API's JSON, and the value
types of :mod:`modelreg.api`), never ORM objects: the database schema is not part of the
plugin API.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.request import Request

    from .api import (
        BackendDescription,
        Event,
        Finding,
        Problem,
        TokenCredentials,
        WebPage,
        WebSection,
    )

#: The project name: the hook prefix, the marker name and the entry-point group all derive
#: from it.
PROJECT_NAME = "modelreg"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# -------------------------------------------------------------------------------------------
# start-up
# -------------------------------------------------------------------------------------------


@hookspec
def modelreg_pyramid_configure(config: Configurator) -> None:
    """Add routes, views, tweens or request methods of a plugin to the Pyramid app.

    Called once at start-up, after the core's own routes and views are configured and before
    the configuration is committed.  A plugin usually calls ``config.include(...)`` on its own
    ``includeme``.  No request and no transaction exist yet.

    :param config: the application's :class:`pyramid.config.Configurator`.
    :returns: nothing; the return value is ignored.
    """


@hookspec
def modelreg_startup(settings: dict[str, Any], registry: Any) -> None:
    """Check a plugin's settings and surroundings once the app is assembled, and stop
    start-up when they are wrong.

    Called once in every process that assembles the app through
    :func:`modelreg.config.configure`, after the configuration is committed: each ``pserve``
    process, each gunicorn and uvicorn worker (the app factory runs in every worker), the
    ``modelreg worker`` process and every ``modelreg`` admin command (but ``modelreg plugins``
    and ``modelreg db``, which must work when the app cannot start).  The blob store and the
    database engine exist; no request and no transaction exist yet.

    :param settings: the application settings.
    :param registry: the application's Pyramid registry.
    :returns: nothing; the return value is ignored.
    :raises Exception: any exception stops start-up with its message (the server does not
        start; the command exits).
    """


@hookspec
def modelreg_migration_locations() -> str | Iterable[str] | None:
    """Return the Alembic version locations of a plugin that owns tables.

    Called by ``modelreg db upgrade`` and when tests build a database.  A plugin keeps its
    tables on its own ``MetaData`` and its migrations on its own Alembic branch (a
    ``branch_labels`` in its first revision, ``depends_on`` the core's head it needs), so
    that ``upgrade heads`` runs core and plugin migrations together.

    :returns: a directory path, a ``package:relative/dir`` resource spec, an iterable of
        either, or ``None`` for a plugin that owns no tables.
    """


@hookspec
def modelreg_storage_backends(settings: dict[str, Any]) -> Iterable[BackendDescription] | None:
    """Describe the blob-store backends this plugin provides.

    Called once at start-up.  The backend named by the ``modelreg.storage`` setting is built
    by calling its description's ``factory(settings)``; its own settings live under
    ``modelreg.storage.<name>.*``.  An unknown name stops start-up with the list of known
    backends.

    :param settings: the application settings.
    :returns: an iterable of :class:`modelreg.api.BackendDescription`, or ``None``.
    """


@hookspec(firstresult=True)
def modelreg_authenticate(request: Request) -> str | TokenCredentials | None:
    """Identify the caller of ``request`` from a source the core does not know (OIDC, LDAP).

    Called during request handling when the core's own API tokens did not identify the
    caller, inside the request's transaction (``request.dbsession`` is usable, read-only use
    is expected).  Stops at first non-None result.

    :param request: the current request.
    :returns: the principal's name, or ``None`` to let the next plugin try; or a
        :class:`modelreg.api.TokenCredentials` holding an API token found elsewhere than in
        the ``Authorization`` header (a web UI's session): the caller is then that token's
        identity, its scopes, expiry and revocation applied as for a bearer token.
    """


# -------------------------------------------------------------------------------------------
# validation
# -------------------------------------------------------------------------------------------


@hookspec
def modelreg_validate_model(
    model: dict[str, Any], previous: dict[str, Any] | None, settings: dict[str, Any]
) -> Iterable[Problem] | None:
    """Check a model that is being created or updated; report every problem found.

    Called in the request's transaction, before the change is written; if any
    implementation returns a problem the request is refused with 422 and all problems are
    reported together (every implementation runs: collect-all).  Do no I/O that can hang.

    :param model: the model as it will be (the REST API's JSON shape: ``name``,
        ``description``, ``tags``).
    :param previous: the model before an update, or ``None`` on creation.
    :param settings: the application settings.
    :returns: an iterable of :class:`modelreg.api.Problem` (empty or ``None`` when fine).
    """


@hookspec
def modelreg_validate_version(
    model: dict[str, Any], version: dict[str, Any], settings: dict[str, Any]
) -> Iterable[Problem] | None:
    """Check a version that is being finalized; report every problem found.

    Called in the finalize request's transaction.  If any implementation returns a problem
    the version becomes ``rejected`` and records all the problems (collect-all); otherwise
    it moves on to scanning or becomes ``ready``.  These are the cheap policy checks; slow
    inspection of file contents belongs in :func:`modelreg_scan_file`.

    :param model: the model, in the REST API's JSON shape.
    :param version: the version, in the REST API's JSON shape (``number``, ``metadata``,
        ``lineage``, ``tags``, and ``files`` once versions have files).
    :param settings: the application settings.
    :returns: an iterable of :class:`modelreg.api.Problem` (empty or ``None`` when fine).
    """


@hookspec
def modelreg_validate_alias(
    model: dict[str, Any], alias: str, version: dict[str, Any],
    previous: dict[str, Any] | None, settings: dict[str, Any],
) -> Iterable[Problem] | None:
    """Check the version an alias is about to point at; report every problem found.

    Called in the request's transaction, with the model's row locked, before the alias is
    set or moved (never when it is deleted, nor when it already points at ``version``), and
    again when a tag of the version an alias points at is set or deleted (``previous`` is
    then that version as it was, ``version`` as it will be).  The version is always
    ``ready`` (the core refuses others first).  If any implementation returns a problem the
    request is refused with 422 and all problems are reported together (collect-all).  Who
    may move an alias is decided by the security policy, not here.

    :param model: the model, in the REST API's JSON shape.
    :param alias: the alias's name.
    :param version: the version it will point at, in the REST API's JSON shape (``number``,
        ``status``, ``tags``, ``metadata``, ``lineage``, ``digest``).
    :param previous: the version it pointed at before (same shape), or ``None`` when the
        alias is being created.
    :param settings: the application settings.
    :returns: an iterable of :class:`modelreg.api.Problem` (empty or ``None`` when fine).
    """


@hookspec
def modelreg_scan_file(
    model: dict[str, Any], version: dict[str, Any], file: dict[str, Any], opener: Any,
    settings: dict[str, Any],
) -> Iterable[Finding] | None:
    """Inspect one file of a finalized version (EXPERIMENTAL: the worker calls it).

    Called by the background worker, outside any request, in its own thread or process.  An
    exception raised here fails closed: the version is rejected.  A version's files may be
    scanned over several runs of its job (``modelreg.scan.batch_seconds``), in different
    workers, and a file again after a worker died.

    :param model: the model, in the REST API's JSON shape.
    :param version: the version, in the REST API's JSON shape.
    :param file: the file's ``path``, ``size``, ``sha256`` and ``media_type``.
    :param opener: a callable returning a binary file object of the file's bytes.
    :param settings: the application settings.
    :returns: an iterable of :class:`modelreg.api.Finding`, or ``None`` for a file this
        scanner does not handle.
    """


# -------------------------------------------------------------------------------------------
# events
# -------------------------------------------------------------------------------------------


@hookspec
def modelreg_on_event(event: Event, settings: dict[str, Any]) -> None:
    """Receive an event after the change it describes was committed.

    Every mutation writes an event to the outbox in its own transaction; the worker hands
    each event to this hook after commit, at least once, in order per model.  Use
    ``event.id`` to drop redeliveries.  Called in the worker's thread, outside any request
    transaction; raising an exception makes the worker deliver the event again later.

    :param event: the :class:`modelreg.api.Event`.
    :param settings: the application settings.
    :returns: nothing; the return value is ignored.
    """


# -------------------------------------------------------------------------------------------
# web UI
# -------------------------------------------------------------------------------------------


@hookspec
def modelreg_web_pages(settings: dict[str, Any]) -> Iterable[WebPage] | None:
    """Pages a plugin adds to the web UI's navigation.

    Declared in the core so that a plugin contributing pages loads whether or not a web UI
    plugin is installed: without one, nothing calls this hook.  The UI calls it per request
    (cheap: return constants) and shows the links the caller's permission allows.

    :param settings: the application settings.
    :returns: an iterable of :class:`modelreg.api.WebPage`, or ``None``.
    """


@hookspec
def modelreg_web_sections(
    page: str, subject: dict[str, Any], request: Request
) -> Iterable[WebSection] | None:
    """Sections a plugin adds to a page of the web UI.

    Called by the web UI while it renders ``page``, after the caller's permission on the
    page was checked; ``request.modelreg`` reads more with the caller's permissions.  A page
    may be a read-only view (modelreg-web's ``version`` and ``admin`` pages are,
    :func:`modelreg.api.add_read_only_view`): there ``request.dbsession`` refuses to write
    and the request holds a read turn, so a section only reads the database and waits on
    nothing else.  Without a web UI plugin nothing calls it.

    :param page: which page: ``model`` or ``version``, or ``admin`` (modelreg-web's page for
        global admins; ``subject`` is ``{}``) (the UI may add more; unknown pages are to be
        ignored, returning ``None``).
    :param subject: what the page shows, in the REST API's JSON shape (the model's or the
        version's document).
    :param request: the current request.
    :returns: an iterable of :class:`modelreg.api.WebSection`, or ``None``.
    """
