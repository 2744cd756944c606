"""nginx in front of a :class:`~modelreg.testing.server.LiveServer`, for tests and benchmarks.

:class:`NginxProxy` runs Debian's ``nginx`` binary with the shipped configuration
(``deploy/nginx/modelreg.conf``) as an unprivileged process on loopback ports chosen at
random, with its own prefix, logs and temporary directories, and stops it and removes them on
exit::

    with LiveServer(settings) as server, NginxProxy(server.port) as proxy:
        urllib.request.urlopen(proxy.url + "/healthz")

The shipped file is used as it is but for the lines that cannot run here: its ``listen``
lines become ``127.0.0.1`` and two free ports (HTTPS without TLS), its ``ssl_*`` lines go,
its upstream points at the given port and its ``server_name`` is ``127.0.0.1`` (send that as
``Host``).  Each rewrite must find what it rewrites, so that an edit of the shipped file
that the tests would no longer exercise fails loudly.

Only the standard library is used, so the module can ship in the package.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from modelreg.testing.server import free_port

__all__ = ["NGINX_CONF", "NginxProxy", "nginx_binary", "render"]

#: The shipped configuration, in a clone (``deploy/`` is not part of the package).
NGINX_CONF = Path(__file__).resolve().parents[3] / "deploy" / "nginx" / "modelreg.conf"
#: The ``server_name`` of the rendered configuration, and the ``Host`` clients send.
HOST = "127.0.0.1"
#: The temporary directories nginx is given (each under ``temp/``).
TEMP_DIRECTORIES = ("body", "proxy", "fastcgi", "uwsgi", "scgi")

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0


def nginx_binary() -> str | None:
    """The ``nginx`` executable (``PATH``, then ``/usr/sbin``), or ``None``."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _replace(text: str, pattern: str, replacement: str, count: int) -> str:
    text, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if found != count:
        raise ValueError(f"the nginx configuration has {found} lines matching {pattern!r}, "
                         f"where the tests expect {count}")
    return text


def render(text: str, *, https_port: int, http_port: int, upstream_port: int) -> str:
    """The shipped configuration ``text`` for loopback: see the module's docstring."""
    text = _replace(text, r"^\s*listen \[::\]:\d+.*\n", "", 4)
    text = _replace(text, r"^\s*ssl_\w+ .*\n", "", 4)
    text = _replace(text, r"listen 443 ssl", f"listen {HOST}:{https_port}", 2)
    text = _replace(text, r"listen 80\b", f"listen {HOST}:{http_port}", 2)
    text = _replace(text, r"server 127\.0\.0\.1:6543", f"server 127.0.0.1:{upstream_port}", 1)
    return _replace(text, r"server_name registry\.example\.com;", f"server_name {HOST};", 2)


class NginxProxy:
    """nginx with the shipped configuration, in front of ``127.0.0.1:upstream_port``.

    Use it as a context manager.  As root, nginx runs as ``nobody`` (its directory is given
    to that user); otherwise as the current user.

    :ivar url: ``http://127.0.0.1:<port>``, the HTTPS server of the configuration (without
        TLS).
    :ivar port: that port; ``http_port`` is the plain-HTTP server's (a redirect).
    :ivar directory: the prefix: ``nginx.conf``, ``modelreg.conf``, ``logs/``, ``temp/``.
    """

    def __init__(self, upstream_port: int, conf: Path = NGINX_CONF) -> None:
        self.upstream_port = upstream_port
        self.conf = conf
        self.port = 0
        self.http_port = 0
        self.url = ""
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []

    def __enter__(self) -> NginxProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is not None and self.directory is not None:
            exc.add_note(f"--- nginx's error log ---\n{self.error_log()}")
        self.stop()

    def error_log(self) -> str:
        """nginx's error log so far."""
        if self.directory is None:
            return "(not started)"
        try:
            return (self.directory / "logs" / "error.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def temp_files(self) -> list[Path]:
        """The files in nginx's temporary directories (request bodies, proxied answers)."""
        assert self.directory is not None
        return [p for p in (self.directory / "temp").rglob("*") if p.is_file()]

    def start(self) -> None:
        """Write the configuration, start nginx and wait until it accepts connections."""
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
        self.directory = Path(tempfile.mkdtemp(prefix="modelreg-nginx-"))
        try:
            self._start(binary)
        except BaseException:
            self.stop()
            raise

    def _start(self, binary: str) -> None:
        directory = self.directory
        assert directory is not None
        self.port, self.http_port = free_port(), free_port()
        self.url = f"http://{HOST}:{self.port}"
        for name in TEMP_DIRECTORIES:
            (directory / "temp" / name).mkdir(parents=True)
        (directory / "logs").mkdir()
        (directory / "modelreg.conf").write_text(render(
            self.conf.read_text(encoding="utf-8"), https_port=self.port,
            http_port=self.http_port, upstream_port=self.upstream_port), encoding="utf-8")
        temps = "\n".join(f"    {name if name != 'body' else 'client_body'}_temp_path "
                          f"{directory / 'temp' / name};" for name in TEMP_DIRECTORIES)
        (directory / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
            f"error_log {directory / 'logs' / 'error.log'} info;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log {directory / 'logs' / 'access.log'};\n{temps}\n"
            f"    include {directory / 'modelreg.conf'};\n}}\n", encoding="utf-8")
        owner: dict[str, object] = {}
        if os.geteuid() == 0:  # run unprivileged: as nobody, in a directory of its own
            nobody = pwd.getpwnam("nobody")
            owner = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        with open(directory / "logs" / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - the system's nginx, our own files
                [binary, "-p", str(directory), "-e", str(directory / "logs" / "error.log"),
                 "-c", str(directory / "nginx.conf")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                cwd=directory, start_new_session=True, **owner)  # type: ignore[call-overload]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with status {self.process.returncode}:\n"
                                   f"{(directory / 'logs' / 'stderr.log').read_text()}\n"
                                   f"{self.error_log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen within {STARTUP_TIMEOUT} s:\n"
                                       f"{self.error_log()}") from None
                time.sleep(0.05)
        self.worker_pids = self._children()

    def _children(self) -> list[int]:
        assert self.process is not None
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        """Stop nginx (QUIT, then KILL after 10 s) and delete its directory."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT)  # graceful: finish, then exit
                try:
                    process.wait(SHUTDOWN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(SHUTDOWN_TIMEOUT)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone: nothing was left behind
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
