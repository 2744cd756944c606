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
    return WSGIMiddleware(wsgi_app, workers=threads)
