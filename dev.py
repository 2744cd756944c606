#!/usr/bin/env python3
"""Set up and run modelreg from a clone, with nothing but Python.

    python3 dev.py serve [--port N]  # create .venv, install, migrate SQLite, pserve development.ini
    python3 dev.py test              # create .venv, install with test extras, run the whole suite

Extra arguments after ``test`` go to pytest.  The virtual environment is ``.venv`` next to
this file; it is (re)installed when a ``setup.cfg`` changed since the last install.  Only the
standard library is used here, so this runs on any Python >= 3.11, on Linux, macOS or Windows.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


#: The port development.ini listens on.
DEFAULT_PORT = 6543


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run a command from the clone's root; stop with its exit code if it fails."""
    code = subprocess.call([str(a) for a in args], cwd=HERE, env=env)  # noqa: S603 - ours
    if code:
        sys.exit(code)


def distributions() -> list[Path]:
    """The client, the core, and every first-party plugin under plugins/."""
    plugins = sorted(p.parent for p in (HERE / "plugins").glob("*/setup.cfg"))
    return [HERE / "client", HERE, *plugins]


def ensure_environment(extras: str) -> None:
    """Create .venv and install the project editable, unless already current."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may run on an older Python
        sys.exit("modelreg needs Python 3.11 or newer")
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    dists = distributions()
    digest = hashlib.sha256(extras.encode())
    for dist in dists:
        for name in ("setup.cfg", "pyproject.toml"):
            path = dist / name
            if path.exists():
                digest.update(path.read_bytes())
    stamp = VENV / f".modelreg-installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    targets = []
    for dist in dists:
        spec = str(dist) + (f"[{extras}]" if dist == HERE and extras else "")
        targets += ["-e", spec]
    run(PYTHON, "-m", "pip", "install", "--quiet", *targets)
    stamp.write_text(digest.hexdigest())


def port_argument(args: list[str]) -> int:
    """The port of ``serve [--port N]``; exits with the usage on anything else."""
    if not args:
        return DEFAULT_PORT
    if len(args) == 2 and args[0] == "--port" and args[1].isdigit() \
            and 0 < int(args[1]) < 65536:
        return int(args[1])
    sys.exit("usage: python3 dev.py serve [--port N]")


def check_port_free(port: int) -> None:
    """Stop with a clear message when something already listens on ``localhost:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            sys.exit(f"port {port} is taken: another registry (or another program) listens "
                     f"there. Stop it, or serve on another port: "
                     f"python3 dev.py serve --port {port + 1}")


def serve(args: list[str]) -> None:
    """Install, bring the SQLite database to the newest schema and serve on :6543 (or the
    port of ``--port``)."""
    port = port_argument(args)
    check_port_free(port)
    ensure_environment("")
    run(BIN / "modelreg", "db", "upgrade", "development.ini")
    print(f"serving the registry at http://localhost:{port} (Ctrl-C stops it)", flush=True)
    # egg:modelreg#waitress listens where MODELREG_LISTEN says, instead of the ini's listen.
    env = {**os.environ, "MODELREG_LISTEN": f"localhost:{port}"}
    try:
        run(PYTHON, "-m", "pyramid.scripts.pserve", "development.ini", env=env)
    except KeyboardInterrupt:
        pass


def test(args: list[str]) -> None:
    """Install with the test extras and run the whole suite."""
    ensure_environment("test")
    run(PYTHON, "-m", "pytest", *args)


def main() -> None:
    """Dispatch ``serve`` or ``test``."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("serve", "test"):
        sys.exit(__doc__)
    if sys.argv[1] == "serve":
        serve(sys.argv[2:])
    else:
        test(sys.argv[2:])


if __name__ == "__main__":
    main()
