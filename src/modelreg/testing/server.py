"""A real server running the registry in a subprocess, for tests and benchmarks.

:class:`LiveServer` writes a throw-away ini file (``[app:main] use = egg:modelreg`` with the
given settings, ``[server:main] use = egg:modelreg#waitress`` (Waitress,
see :func:`modelreg.servers.serve_paste`) on a free local port), starts
``pserve`` on it exactly as a deployment would (so plugins come from entry points), waits
until ``/healthz`` answers, and stops the process and removes its files on exit::

    with LiveServer({"sqlalchemy.url": db.url}, threads=16) as server:
        urllib.request.urlopen(server.url + "/healthz")

The same ini runs under the other supported servers (the ``servers`` extra):
``server="gunicorn"`` runs ``gunicorn --paste`` with gthread workers, ``server="uvicorn"``
runs uvicorn on :func:`modelreg.asgi.create_app`; ``workers`` sets their process count.

Only the standard library is used, so the module can ship in the package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["SERVERS", "LiveServer", "free_port", "serve_in_thread"]

#: The servers :class:`LiveServer` can run.
SERVERS = ("waitress", "gunicorn", "uvicorn")

#: Seconds to wait for ``/healthz`` to answer after starting the process.
STARTUP_TIMEOUT = 30.0
#: Seconds to wait for the process to end after asking it to.
SHUTDOWN_TIMEOUT = 10.0
#: How many bytes of the log to quote when the server fails to start.
LOG_TAIL_BYTES = 4000
#: The setting that carries a :class:`LiveServer`'s plugin list to :func:`plugin_app`.
PLUGINS_SETTING = "modelreg.testing.plugins"

_LOGGING_SECTIONS = """\
[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s:%(lineno)s][%(threadName)s] %(message)s
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ini_value(value: Any) -> str:
    """``value`` as an ini value: ``%`` escaped for interpolation, continuation lines indented."""
    text = str(value).replace("%", "%%")
    return "\n    ".join(text.splitlines()) if "\n" in text else text


def _section(name: str, options: dict[str, Any]) -> str:
    lines = [f"[{name}]"]
    lines += [f"{key} = {_ini_value(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _module_name(plugin: Any) -> str:
    if isinstance(plugin, str):
        return plugin
    name = getattr(plugin, "__name__", None)
    if not isinstance(name, str) or sys.modules.get(name) is not plugin:
        raise ValueError(f"LiveServer takes plugin modules or their names, not {plugin!r}")
    return name


def _import_root(plugin: Any) -> str | None:
    """The ``sys.path`` entry a plugin module was imported from."""
    module = sys.modules.get(plugin) if isinstance(plugin, str) else plugin
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return None
    depth = len(module.__name__.split("."))
    if Path(path).name == "__init__.py":
        depth += 1
    return str(Path(path).resolve().parents[depth - 1])


def plugin_app(global_config: dict[str, Any], **settings: Any) -> Any:
    """The paste app factory of a :class:`LiveServer` with a plugin list: the app with
    exactly the plugins of the ``modelreg.testing.plugins`` setting."""
    from ..config import configure

    names = str(settings.pop(PLUGINS_SETTING, "")).split()
    import importlib

    plugins = [importlib.import_module(name) for name in names]
    return configure(settings, load_entrypoints=False, plugins=plugins).make_wsgi_app()


class LiveServer:
    """The registry served by Waitress in a child process, on ``127.0.0.1`` and a free port.

    Use it as a context manager: entering starts the server and waits until it answers
    ``GET /healthz`` with 200; leaving stops it and deletes its temporary directory (ini file
    and log).  An exception that leaves the block carries the end of the log as a note, which
    pytest prints with the failure.

    :param settings: the app settings (``[app:main]``), at least ``sqlalchemy.url``.
    :param threads: Waitress worker threads.
    :param server_settings: more ``[server:main]`` options (e.g. ``connection_limit``); they
        override ``listen`` and ``threads`` too.
    :param startup_timeout: seconds to wait for ``/healthz``.
    :param server: ``waitress`` (``pserve``), ``gunicorn`` (``--paste``, gthread workers with
        ``threads`` threads each) or ``uvicorn`` (``modelreg.asgi``, ``threads`` adapter
        threads per process).
    :param workers: processes of gunicorn or uvicorn (Waitress runs one).
    :param environ: more environment variables for the server process.
    :param arguments: more command-line arguments for gunicorn or uvicorn (e.g. ``["-c",
        "gunicorn.conf.py"]``); the port, workers and threads given here win.
    :param plugins: exactly these plugins, as :func:`modelreg.testing.make_app` takes them
        (modules or dotted module names; include :data:`modelreg.testing.CORE_PLUGINS`),
        instead of the installed entry points.  Their directories go on the server's
        ``PYTHONPATH``.  Waitress and gunicorn only.

    :ivar url: the base URL, e.g. ``http://127.0.0.1:50123`` (set once started).
    :ivar port: the port listened on.
    :ivar directory: the temporary directory holding ``server.ini`` and ``server.log``.
    """

    def __init__(
        self,
        settings: dict[str, str],
        threads: int = 8,
        server_settings: dict[str, Any] | None = None,
        *,
        startup_timeout: float = STARTUP_TIMEOUT,
        server: str = "waitress",
        workers: int = 1,
        environ: dict[str, str] | None = None,
        arguments: list[str] | None = None,
        plugins: Any = None,
    ) -> None:
        if not settings.get("sqlalchemy.url"):
            raise ValueError("LiveServer needs settings with sqlalchemy.url")
        if server not in SERVERS:
            raise ValueError(f"server must be one of {', '.join(SERVERS)}, not {server!r}")
        self.server = server
        self.workers = workers
        self.environ = dict(environ or {})
        self.arguments = list(arguments or [])
        self.plugins = None if plugins is None else [_module_name(p) for p in plugins]
        if self.plugins is not None and server == "uvicorn":
            raise ValueError("a plugin list is for waitress and gunicorn (pserve's ini)")
        if self.plugins is not None:
            paths = [p for p in (_import_root(p) for p in plugins) if p]
            known = self.environ.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
            self.environ["PYTHONPATH"] = os.pathsep.join(
                dict.fromkeys([*paths, *filter(None, known.split(os.pathsep))]))
        self.settings = dict(settings)
        self.threads = threads
        self.server_settings = dict(server_settings or {})
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.url: str = ""
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and self.process is not None:
            # The log is deleted with the directory: a failure inside the block carries its
            # end, so that the report says what the server saw.
            exc.add_note(f"--- the end of the log of the server at {self.url} ---\n"
                         f"{self.log_tail()}")
        self.stop()

    # ----------------------------------------------------------------------- lifecycle

    @property
    def log_path(self) -> Path:
        """The file the server's stdout and stderr go to."""
        if self.directory is None:
            raise RuntimeError("the server has not been started")
        return self.directory / "server.log"

    def ini_text(self) -> str:
        """The ini file the server runs with."""
        server = {
            "use": "egg:modelreg#waitress",
            "listen": f"127.0.0.1:{self.port}",
            "threads": str(self.threads),
            **self.server_settings,
        }
        app = {"use": "egg:modelreg", **self.settings}
        if self.plugins is not None:
            app = {"use": "call:modelreg.testing.server:plugin_app", **self.settings,
                   PLUGINS_SETTING: " ".join(self.plugins)}
        return "\n".join(
            [_section("app:main", app), _section("server:main", server), _LOGGING_SECTIONS]
        )

    def command(self, ini: Path) -> list[str]:
        """The command line that serves ``ini`` with the chosen server."""
        if self.server == "gunicorn":
            return [sys.executable, "-m", "gunicorn", *self.arguments, "--paste", str(ini),
                    "--bind", f"127.0.0.1:{self.port}", "--worker-class", "gthread",
                    "--workers", str(self.workers), "--threads", str(self.threads),
                    "--graceful-timeout", str(int(SHUTDOWN_TIMEOUT) // 2)]
        if self.server == "uvicorn":
            return [sys.executable, "-m", "uvicorn", *self.arguments,
                    "--factory", "modelreg.asgi:create_app",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(self.workers), "--no-access-log"]
        return [sys.executable, "-m", "pyramid.scripts.pserve", str(ini)]

    def start(self) -> None:
        """Start the server and wait until it answers; :class:`RuntimeError` if it does not."""
        if self.process is not None:
            raise RuntimeError("the server is already running")
        self.directory = Path(tempfile.mkdtemp(prefix="modelreg-server-"))
        try:
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            ini = self.directory / "server.ini"
            ini.write_text(self.ini_text(), encoding="utf-8")
            self._log = open(self.log_path, "wb")
            environ = {**os.environ, **self.environ, "MODELREG_INI": str(ini),
                       "MODELREG_SERVER_THREADS": str(self.threads)}
            # Blobs go to the server's own directory unless the settings or the caller's
            # environment name a place (removed with the directory when the server stops).
            environ.setdefault("MODELREG_STORAGE_LOCAL_PATH", str(self.directory / "blobs"))
            # Its temporary files (a scan's copy, a spooled body) too, unless the caller
            # names a place: a server stopped mid-scan cannot leave them behind.
            if "TMPDIR" not in self.environ:
                environ["TMPDIR"] = str(self.directory / "tmp")
                (self.directory / "tmp").mkdir()
            # And its runtime files (gunicorn's control socket, else in ~/.gunicorn).
            if "XDG_RUNTIME_DIR" not in self.environ:
                environ["XDG_RUNTIME_DIR"] = str(self.directory / "run")
                (self.directory / "run").mkdir(mode=0o700)
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and file
                self.command(ini),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=environ,
                # Its own process group, so that worker processes can be stopped with it.
                start_new_session=hasattr(os, "killpg"),
            )
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"the server exited with status {code} before answering /healthz; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
                exc.close()
            except (OSError, urllib.error.URLError) as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not answer GET /healthz with 200 within "
                    f"{self.startup_timeout:g} s (last: {last_error}); its log ends with:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self, size: int = LOG_TAIL_BYTES) -> str:
        """The last ``size`` bytes of the server's log."""
        if self._log is not None:
            self._log.flush()
        try:
            data = self.log_path.read_bytes()
        except (OSError, RuntimeError):
            return "(no log)"
        return data[-size:].decode("utf-8", errors="replace") or "(empty log)"

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s) and delete its directory.

        Worker processes (gunicorn, uvicorn) end with their parent; any left over are killed
        with the process group.
        """
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(SHUTDOWN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(SHUTDOWN_TIMEOUT)
            if hasattr(os, "killpg"):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass  # the group is gone: nothing was left behind
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def serve_in_thread(app: Any, **settings: Any) -> Any:
    """modelreg's Waitress (:func:`modelreg.servers.create_server` with ``settings``) serving
    ``app`` in this process, created and run on a daemon thread of its own, so that what it
    sets on the thread that creates it (``cpus``) holds for that thread and the ones it
    starts, not the caller's; the server's ``modelreg_thread`` is that thread.  Stop it with
    ``server.close()`` and ``server.task_dispatcher.shutdown()``."""
    from modelreg.servers import create_server

    made: list[Any] = []
    failed: list[BaseException] = []
    ready = threading.Event()

    def run() -> None:
        try:
            made.append(create_server(app, **settings))
        except BaseException as exc:  # handed to the caller below
            failed.append(exc)
        finally:
            ready.set()
        if made:
            made[0].run()

    thread = threading.Thread(target=run, name="modelreg-serve-in-thread", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the server was not created within 30 s")
    if failed:
        raise failed[0]
    made[0].modelreg_thread = thread
    return made[0]
