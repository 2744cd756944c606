"""The registry as an ASGI app, for uvicorn and other ASGI servers.

modelreg is a WSGI app; :func:`create_app` builds it from an ini file exactly as ``pserve``
does and wraps it in a2wsgi's WSGI-to-ASGI adapter, which runs each request in a thread
pool.  Install the ``servers`` extra (``pip install 'modelreg[servers]'``), then::

    MODELREG_INI=production.ini uvicorn --factory modelreg.asgi:create_app \\
        --host 127.0.0.1 --port 6543 --workers 2

Environment:

``MODELREG_INI`` (required)
    the ini file; its ``[app:main]`` section is the app (``MODELREG_INI_APP`` names another
    section), and its logging sections, if any, configure logging.
``MODELREG_SERVER_THREADS``
    the adapter's threads per process; by default the ini's Waitress ``threads``, else 8.
    The pool-size check (:mod:`modelreg.servers`) sees the same number.
"""

from __future__ import annotations

import logging.config
import os
import socket
from pathlib import Path
from typing import Any

from .servers import THREADS_VARIABLE, ini_server_threads, server_threads

INI_VARIABLE = "MODELREG_INI"
APP_VARIABLE = "MODELREG_INI_APP"
DEFAULT_THREADS = 8


def _setup_logging(ini: Path) -> None:
    """Configure logging from the ini's logging sections, keeping the server's own loggers."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini, encoding="utf-8")
    if parser.has_section("loggers"):
        logging.config.fileConfig(
            ini,
            defaults={"here": str(ini.parent), "__file__": str(ini)},
            disable_existing_loggers=False,
        )


def nodelay_on_server_sockets() -> int:
    """Set ``TCP_NODELAY`` on the server sockets this process holds (bound TCP sockets with
    no peer); how many there were.

    uvicorn's ``--workers`` supervisor (and its gunicorn worker) binds the socket with protocol
    0, and asyncio only disables Nagle's algorithm on accepted sockets whose protocol is
    ``IPPROTO_TCP`` (uvicorn issue #3149): a response written in two pieces (headers, body)
    then waits for the client's delayed ACK, about 40 ms on every keep-alive request.  Linux
    gives accepted sockets the listener's ``TCP_NODELAY``, so setting it on the inherited
    socket (bound, not yet listening when the app is built) fixes every connection of the
    worker.  Where ``/proc/self/fd`` does not exist this finds nothing to do.
    """
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return 0
    count = 0
    for entry in list(fds.iterdir()):
        try:
            fd = os.dup(int(entry.name))
        except (ValueError, OSError):  # not a number, or gone
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        with sock:
            try:
                if (sock.family not in (socket.AF_INET, socket.AF_INET6)
                        or sock.type != socket.SOCK_STREAM or sock.getsockname()[1] == 0):
                    continue
                try:
                    sock.getpeername()
                    continue  # connected: a client connection (the database...), not ours
                except OSError:
                    pass
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                count += 1
            except OSError:
                continue
    return count


def create_app() -> Any:
    """The ASGI app of the ini file named by ``MODELREG_INI`` (uvicorn's ``--factory``)."""
    from a2wsgi import WSGIMiddleware
    from pyramid.paster import get_app

    name = os.environ.get(INI_VARIABLE, "").strip()
    if not name:
        raise RuntimeError(f"set {INI_VARIABLE} to the ini file to serve, e.g. production.ini")
    ini = Path(name).resolve()
    if not ini.is_file():
        raise RuntimeError(f"{INI_VARIABLE} = {name}: no such file")
    threads = server_threads() or ini_server_threads(ini) or DEFAULT_THREADS
    # The app's pool-size check reads the same variable.
    os.environ[THREADS_VARIABLE] = str(threads)
    _setup_logging(ini)
    wsgi_app = get_app(str(ini), os.environ.get(APP_VARIABLE, "main"))
    nodelay_on_server_sockets()
    return WSGIMiddleware(wsgi_app, workers=threads)
