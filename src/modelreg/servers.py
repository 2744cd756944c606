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
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)

THREADS_VARIABLE = "MODELREG_SERVER_THREADS"
#: SQLAlchemy's defaults for :class:`~sqlalchemy.pool.QueuePool`.
DEFAULT_MAX_OVERFLOW = 10


def ini_server_threads(ini_path: str | os.PathLike[str] | None, section: str = "server:main"
                       ) -> int | None:
    """Waitress's ``threads`` from the ``[server:main]`` section of ``ini_path``, if any."""
    if not ini_path:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini_path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None
    if not parser.has_section(section):
        return None
    server = parser[section]
    if "waitress" not in server.get("use", ""):
        return None
    try:
        return int(server.get("threads", "4"))  # Waitress's default is 4
    except ValueError:
        return None


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
