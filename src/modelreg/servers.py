"""What the app knows of the server that runs it: its thread count, and the pool that fits.

Each server thread handles one request at a time, and a request holds at most one database
connection while it runs; a pool smaller than the threads makes requests queue for a
connection (``sqlalchemy.pool_timeout``, 30 s by default) and then fail.  The app cannot ask
the server how many threads it has, so it is told:

``MODELREG_SERVER_THREADS`` (environment)
    the server's threads per process.  ``modelreg.asgi`` sets it to the adapter's thread
    count; set it in gunicorn's config for ``--threads`` (``raw_env``, see
    ``docs/gunicorn.conf.py``).
``[server:main] threads`` (the ini file)
    Waitress's threads, when the server section is Waitress's and the variable is unset.

When both the threads and the pool (``sqlalchemy.pool_size`` + ``sqlalchemy.max_overflow``)
are known, start-up warns if the pool is the smaller.

It also holds the Waitress that modelreg's ini files serve with (``use = egg:modelreg#waitress``,
:func:`serve_paste`): Waitress itself, with a request parser that closes what Waitress 3.0.x
leaves open (:class:`FramingGuardParser`), and a task that keeps an HTTP/1.1 connection
open after a ``304`` or ``204`` (:class:`BodilessKeepAliveTask`), that lets the requests of
read-only views take turns (:class:`ReadTurns`), and that can keep its threads on chosen CPUs
(:class:`CpuPin`).

Read turns
    Each of Waitress's threads runs one request; Python runs one thread at a time, and
    every call that lets go of the GIL (a database call, a socket or log write) hands it to
    another runnable thread.  With many reads in flight that is a context switch for each
    such call: served by eight threads at 16 connections, a read on SQLite took 60 to 70 context
    switches and twice the CPU it takes alone (docs/performance.md, "Read turns").  So the
    ``GET`` and ``HEAD`` requests of one process take turns: each takes a turn before its
    task runs and keeps it while the app answers, unless the app finds it is not a request
    to a read-only view (:func:`modelreg.db.add_read_only_view`; the decision is
    :func:`modelreg.db.tm_activate_hook`'s), which gives it up at once.  Read-only views
    only compute and read the database, which never makes a reader wait for a writer
    (SQLite's WAL, PostgreSQL's MVCC), so a turn is never held while waiting for something
    that needs one.  Every other request (writes, uploads, downloads, the views that are
    not marked read-only) runs as before.  ``reads_at_once`` in ``[server:main]`` sets how
    many reads run at once (1 by default; 0 switches turns off).

CPUs (``cpus`` in ``[server:main]``, or ``MODELREG_CPUS``)
    Python runs one of the process's threads at a time, yet every request crosses three of
    them (Waitress's socket loop, a request thread, the loop again, each handing over the
    GIL), and where they run on different CPUs each hand-over is a wake-up on another CPU:
    on a virtual machine an interrupt between virtual CPUs.  ``cpus = 0`` (taskset's list
    syntax: ``0,2``, ``1-3``) keeps Waitress's threads on those CPUs
    (:class:`CpuPin`), which on a two-vCPU machine served 1.7-2.2 times the reads and 1.0-1.6
    times the writes per second, at up to half the CPU per request (docs/performance.md,
    "One CPU for Waitress's threads").  A request whose body Waitress spooled (an upload: its
    hashing and writing run without the GIL, in parallel) runs on every CPU the process
    may use, as do the embedded worker and anything started before the server.  Unset by
    default: several processes that all pinned themselves to one CPU would share it; give
    each its own (``MODELREG_CPUS=1`` beside ``MODELREG_LISTEN``).
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from .db import READ_TURN_KEY

log = logging.getLogger(__name__)

THREADS_VARIABLE = "MODELREG_SERVER_THREADS"
#: ``[server:main]``: how many requests to read-only views one process runs at once
#: (:class:`ReadTurns`); ``0`` for no limit.
READS_AT_ONCE_SETTING = "reads_at_once"
DEFAULT_READS_AT_ONCE = 1
#: The methods whose requests take a read turn.
_TURN_METHODS = frozenset({"GET", "HEAD"})
#: SQLAlchemy's defaults for :class:`~sqlalchemy.pool.QueuePool`.
DEFAULT_MAX_OVERFLOW = 10


class ReadTurn:
    """A request's turn (:class:`ReadTurns`), held from its task's start until
    :meth:`give_up` (which the task calls when it ends, if no one did before)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: Any) -> None:
        self._lock = lock

    @property
    def held(self) -> bool:
        """Whether the turn is still held."""
        return self._lock is not None

    def give_up(self) -> None:
        """Let the next request have the turn; a second call does nothing."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


class ReadTurns:
    """The turns of one process's ``GET`` and ``HEAD`` requests: at most ``at_once`` of them
    run at the same time (see "Read turns" above)."""

    def __init__(self, at_once: int) -> None:
        if at_once < 1:
            raise ValueError(f"{READS_AT_ONCE_SETTING} must be 1 or more here, not {at_once}")
        self.at_once = at_once
        # A plain lock for one at a time: taken and given in C, with no Python-level
        # condition as a semaphore has.
        self._lock = threading.Lock() if at_once == 1 else threading.BoundedSemaphore(at_once)

    def take(self) -> ReadTurn:
        """Wait for a turn and hold it."""
        self._lock.acquire()
        return ReadTurn(self._lock)


#: ``[server:main]``: the CPUs Waitress's threads run on (:class:`CpuPin`); unset: any.
CPUS_SETTING = "cpus"
#: Replaces ``cpus`` from the environment, as ``MODELREG_LISTEN`` does ``listen``.
CPUS_VARIABLE = "MODELREG_CPUS"


def parse_cpus(value: Any) -> frozenset[int] | None:
    """``cpus`` in taskset's list syntax (``0``, ``0,2``, ``1-3``); ``None`` when empty."""
    text = str(value or "").strip()
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or (
                dash and int(last) < int(first)):
            raise ValueError(f"[server:main] {CPUS_SETTING} (or {CPUS_VARIABLE}) is a list of "
                             f"CPU numbers and ranges such as 0 or 0,2-3, not {text!r}")
        cpus.update(range(int(first), int(last if dash else first) + 1))
    return frozenset(cpus)


class CpuPin:
    """Waitress's threads kept on ``cpus`` (see "CPUs" above); the requests that carry a
    spooled body, on every CPU the process may use.

    Linux only (``os.sched_setaffinity``), where setting a thread's CPUs sets that
    thread's alone, and the threads it starts inherit them.
    """

    def __init__(self, cpus: frozenset[int]) -> None:
        if not hasattr(os, "sched_setaffinity"):
            raise ValueError(f"[server:main] {CPUS_SETTING}: this platform cannot pin threads "
                             "to CPUs (no sched_setaffinity)")
        allowed = frozenset(os.sched_getaffinity(0))
        if not cpus <= allowed:
            raise ValueError(
                f"[server:main] {CPUS_SETTING}: CPU {', '.join(map(str, sorted(cpus - allowed)))}"
                f" is not one this process may run on ({', '.join(map(str, sorted(allowed)))})")
        self.cpus = cpus
        #: What the process could run on before: a spooled request's CPUs.
        self.allowed = allowed

    def pin(self) -> None:
        """Keep the calling thread, and the threads it starts from now on, on :attr:`cpus`."""
        os.sched_setaffinity(0, self.cpus)

    def widen(self) -> None:
        """Let the calling thread run on every CPU of :attr:`allowed`."""
        os.sched_setaffinity(0, self.allowed)


def reads_at_once(value: Any) -> int:
    """The ``reads_at_once`` setting (a count, ``0`` for no limit)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"[server:main] {READS_AT_ONCE_SETTING} must be a whole number, 0 "
                         f"for no limit, not {value!r}")
    return number


def ini_waitress_setting(ini_path: str | os.PathLike[str] | None, name: str, default: int,
                         section: str = "server:main") -> int | None:
    """The whole-number setting ``name`` of the Waitress section ``section`` of ``ini_path``
    (``default``, Waitress's own, when unset); ``None`` when the file cannot be read, has no
    such section, or its server is not Waitress."""
    if not ini_path:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini_path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None
    if not parser.has_section(section) or "waitress" not in parser[section].get("use", ""):
        return None
    try:
        return int(parser[section].get(name, str(default)))
    except ValueError:
        return None


def ini_server_threads(ini_path: str | os.PathLike[str] | None, section: str = "server:main"
                       ) -> int | None:
    """Waitress's ``threads`` from the ``[server:main]`` section of ``ini_path``, if any."""
    return ini_waitress_setting(ini_path, "threads", 4, section)  # Waitress's default is 4


def server_threads(
    global_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> int | None:
    """The server's threads per process: ``MODELREG_SERVER_THREADS``, else the ini's Waitress
    ``threads`` (``global_config["__file__"]`` is the ini that PasteDeploy read), else unknown.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_VARIABLE, "").strip()
    if value:
        try:
            return int(value)
        except ValueError:
            log.warning("%s = %r is not a number; ignored", THREADS_VARIABLE, value)
    return ini_server_threads((global_config or {}).get("__file__"))


def pool_capacity(engine: Engine, settings: Mapping[str, Any]) -> int | None:
    """How many connections the engine's pool hands out at most, if it has a limit."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return None
    overflow = int(settings.get("sqlalchemy.max_overflow", DEFAULT_MAX_OVERFLOW))
    if overflow < 0:  # unlimited overflow
        return None
    return pool.size() + overflow


def check_pool_size(engine: Engine, settings: Mapping[str, Any], threads: int | None
                    ) -> str | None:
    """Log a warning (and return it) if the pool has fewer connections than ``threads``."""
    capacity = pool_capacity(engine, settings)
    if threads is None or capacity is None or capacity >= threads:
        return None
    message = (
        f"the database pool holds at most {capacity} connections "
        f"(sqlalchemy.pool_size + sqlalchemy.max_overflow) but the server runs {threads} "
        f"threads: requests will wait for connections; raise sqlalchemy.pool_size"
    )
    log.warning(message)
    return message


# ----------------------------------------------------------------------- Waitress's framing

#: The Waitress releases whose parser :class:`FramingGuardParser` is written against.
GUARDED_WAITRESS = "3.0."


def waitress_version() -> str:
    """The installed Waitress's version."""
    return importlib.metadata.version("waitress")


def _json_error(status: int, reason: str, code: str, message: str,
                details: dict[str, Any] | None = None) -> Any:
    """A Waitress error whose body is modelreg's JSON error rather than plain text."""
    from waitress.utilities import Error

    class JSONError(Error):
        def to_response(self, ident: str | None = None) -> tuple[str, list, bytes]:
            body = {"error": {"code": code, "message": message, "details": details or {}}}
            return (f"{status} {reason}", [("Content-Type", "application/json")],
                    json.dumps(body).encode())

    JSONError.code = status
    JSONError.reason = reason
    return JSONError(message)


def _guard_classes() -> tuple[type, type]:
    """The parser and channel classes, built against Waitress 3.0.x."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser, ParsingError
    from waitress.task import WSGITask
    from waitress.utilities import RequestEntityTooLarge

    class BodilessKeepAliveTask(WSGITask):
        """Waitress 3.0.x's task, keeping an HTTP/1.1 connection open after a response that
        has no body by its status (``204``, ``304``).

        Waitress keeps a connection open only after a response with a ``Content-Length``
        header, and it drops that header from a ``1xx``, ``204`` or ``304`` (which may not
        carry one, RFC 9110 8.6), so it closed the connection after every such answer
        (``build_response_header`` in ``waitress/task.py``: no ``Content-Length`` ->
        ``set_close_on_finish``): a client polling an alias with ``If-None-Match``
        reconnected after each ``304``.  Such a response ends with its header section (RFC
        9112 6.3, rule 1), so the connection can carry the next request.  Only that one
        close is skipped: a request's ``Connection: close``, HTTP/1.0, and every other
        reason Waitress closes for (an error, a short body) still close.
        """

        _bodiless_keep_alive = False
        _read_turn: ReadTurn | None = None

        def service(self) -> None:
            pin: CpuPin | None = getattr(self.channel.server, "modelreg_cpu_pin", None)
            body = self.request.body_rcv
            if pin is not None and body is not None and len(body) > self.channel.adj.inbuf_overflow:
                # An upload: its hashing and writing run without the GIL, on any CPU.
                pin.widen()
                try:
                    return self._service()
                finally:
                    pin.pin()
            return self._service()

        def _service(self) -> None:
            # A GET or HEAD takes a turn for the whole task: the app, then the response's
            # writing (see "Read turns" in this module's docstring).
            turns: ReadTurns | None = getattr(self.channel.server, "modelreg_read_turns", None)
            if turns is None or self.request.command not in _TURN_METHODS:
                return super().service()  # type: ignore[no-any-return]
            self._read_turn = turn = turns.take()
            try:
                return super().service()  # type: ignore[no-any-return]
            finally:
                turn.give_up()

        def get_environment(self) -> dict[str, Any]:
            environ: dict[str, Any] = super().get_environment()
            if self._read_turn is not None:
                environ[READ_TURN_KEY] = self._read_turn
            return environ

        def build_response_header(self) -> bytes:
            self._bodiless_keep_alive = (
                self.version == "1.1" and not self.has_body and not self.close_on_finish
                and self.request.headers.get("CONNECTION", "").lower() != "close")
            try:
                return super().build_response_header()  # type: ignore[no-any-return]
            finally:
                self._bodiless_keep_alive = False

        def set_close_on_finish(self) -> None:
            # While the header of a bodiless HTTP/1.1 answer is built, the only call left
            # is the "no Content-Length" one (see the class).
            if not self._bodiless_keep_alive:
                super().set_close_on_finish()

    class FramingGuardParser(HTTPRequestParser):
        """Waitress 3.0.x's request parser, refusing what it lets through.

        * A request with both ``Content-Length`` and ``Transfer-Encoding``: Waitress 3.0.2
          reads it as chunked, drops ``Transfer-Encoding`` from what the app sees, and goes
          on to the next request on the connection, where RFC 9112 §6.1 says the connection
          must be closed (a front end that framed it by ``Content-Length`` would see another
          request in its body).  It is answered ``400 ambiguous_framing`` and the connection
          closed; nothing after its header section is parsed.
        * An HTTP/1.0 request with ``Transfer-Encoding`` (which Waitress frames by
          ``Content-Length``, RFC 9112 §6.1 says the framing is faulty): the same.
        * A body over ``max_request_body_size``: Waitress's ``413``, as modelreg's JSON
          ``payload_too_large``.  A declared length over it is refused from the header,
          unread, also with ``Expect: 100-continue`` (to which Waitress would answer ``100
          Continue`` first and then read the whole body before refusing it).
        """

        ambiguous = False

        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            if self.chunked and "CONTENT_LENGTH" in self.headers:
                self.ambiguous = True
            elif self.version != "1.1" and "TRANSFER_ENCODING" in self.headers:
                self.ambiguous = True
            if self.ambiguous:
                raise ParsingError("Content-Length with Transfer-Encoding")

        def received(self, data: bytes) -> int:
            consumed = super().received(data)
            if self.error is not None:
                # Waitress would answer "100 Continue" to a request it has already refused
                # from its header, and then read the whole body before the error.
                self.expect_continue = False
            if self.ambiguous:
                self.error = _json_error(
                    400, "Bad Request", "ambiguous_framing",
                    "a request may not carry both Content-Length and Transfer-Encoding, nor "
                    "Transfer-Encoding in HTTP/1.0; the connection is closed")
                self.connection_close = True
                # An HTTP/1.0 "Connection: keep-alive" would make Waitress add "Keep-Alive"
                # to the answer's "Connection: close".
                self.headers.pop("CONNECTION", None)
                return len(data)  # what follows on the connection is never parsed
            if isinstance(self.error, RequestEntityTooLarge):
                limit = self.adj.max_request_body_size
                self.error = _json_error(
                    413, "Request Entity Too Large", "payload_too_large",
                    f"the request body is over the server's limit of {limit} bytes",
                    {"max_request_body_size": limit})
            return consumed

    class FramingGuardChannel(HTTPChannel):
        parser_class = FramingGuardParser
        task_class = BodilessKeepAliveTask

    return FramingGuardParser, FramingGuardChannel


def framing_guard() -> type | None:
    """The channel class that closes ambiguous framing, or ``None`` (with a warning in the log)
    when the installed Waitress is not a 3.0.x release the guard was written against."""
    version = waitress_version()
    if not version.startswith(GUARDED_WAITRESS):
        log.warning(
            "Waitress %s is not %sx: modelreg's guard against requests with both "
            "Content-Length and Transfer-Encoding is off; run behind a proxy that refuses "
            "them (deploy/nginx/modelreg.conf does); read turns (reads_at_once) are off too",
            version, GUARDED_WAITRESS)
        return None
    return _guard_classes()[1]


def create_server(app: Callable[..., Any], **settings: Any) -> Any:
    """Waitress's ``create_server`` with modelreg's channel (:func:`framing_guard`) on every
    listening socket, the read turns of ``reads_at_once`` (:class:`ReadTurns`) shared by
    them, and Waitress's threads on the CPUs of ``cpus`` (:class:`CpuPin`; the calling
    thread, which runs Waitress's loop, is pinned too); the other settings are Waitress's."""
    from waitress.server import BaseWSGIServer
    from waitress.server import create_server as waitress_create_server

    channel = framing_guard()
    at_once = reads_at_once(settings.pop(READS_AT_ONCE_SETTING, DEFAULT_READS_AT_ONCE))
    turns = ReadTurns(at_once) if at_once and channel is not None else None
    cpus = parse_cpus(settings.pop(CPUS_SETTING, None))
    pin = None if cpus is None else CpuPin(cpus)
    if pin is not None and channel is None:
        log.warning("[server:main] %s: Waitress's threads are pinned, but uploads are not "
                    "let out of the pin on this Waitress release", CPUS_SETTING)
    socket_map: dict[int, Any] | None = settings.pop("map", None)
    if socket_map is None:
        socket_map = {}
    if pin is not None:
        pin.pin()  # before Waitress starts its threads: they inherit it
    server = waitress_create_server(app, map=socket_map, **settings)
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.modelreg_cpu_pin = pin
            if channel is not None:
                dispatcher.channel_class = channel
                dispatcher.modelreg_read_turns = turns  # one set for every socket
    return server


#: Where to listen instead of ``[server:main]``'s ``listen`` (``host:port``, several separated
#: by spaces): for ``python3 dev.py serve --port`` and the container image, which run the
#: repository's ini files unchanged.
LISTEN_VARIABLE = "MODELREG_LISTEN"


def serve_paste(app: Callable[..., Any], global_conf: Mapping[str, Any],
                **settings: Any) -> int:
    """The PasteDeploy server runner ``egg:modelreg#waitress``: ``[server:main]`` takes
    Waitress's own settings and modelreg's (``reads_at_once``, ``cpus``);
    ``MODELREG_LISTEN`` in the environment replaces ``listen`` (and ``host``/``port``),
    ``MODELREG_CPUS`` replaces ``cpus``."""
    import waitress

    listen = os.environ.get(LISTEN_VARIABLE, "").strip()
    if listen:
        for key in ("listen", "host", "port"):
            settings.pop(key, None)
        settings["listen"] = listen
    cpus = os.environ.get(CPUS_VARIABLE, "").strip()
    if cpus:
        settings[CPUS_SETTING] = cpus
    waitress.serve(app, _server=create_server, **settings)
    return 0
