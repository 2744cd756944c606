#!/usr/bin/env python3
"""Set up and run modelreg from a clone, with nothing but Python.

    python3 dev.py serve   # create .venv, install, migrate SQLite, pserve development.ini
    python3 dev.py test    # create .venv, install with test extras, run the whole suite

Extra arguments after ``test`` go to pytest.  The virtual environment is ``.venv`` next to
this file; it is (re)installed when a ``setup.cfg`` changed since the last install.  Only the
standard library is used here, so this runs on any Python >= 3.11, on Linux, macOS or Windows.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def run(*args: str | Path) -> None:
    """Run a command from the clone's root; stop with its exit code if it fails."""
    code = subprocess.call([str(a) for a in args], cwd=HERE)  # noqa: S603 - our own tools
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


def serve() -> None:
    """Install, bring the SQLite database to the newest schema and serve on :6543."""
    ensure_environment("")
    run(BIN / "modelreg", "db", "upgrade", "development.ini")
    print("serving the registry at http://localhost:6543 (Ctrl-C stops it)", flush=True)
    try:
        run(PYTHON, "-m", "pyramid.scripts.pserve", "development.ini")
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
        serve()
    else:
        test(sys.argv[2:])


if __name__ == "__main__":
    main()
