"""``pip install ./client`` alone brings no server dependencies
(docs/architecture.md, "The client").

Checked statically and offline: the requirements declared in ``client/setup.cfg``, followed
through the metadata of the installed distributions (what pip would resolve), must not reach
Pyramid, SQLAlchemy or any other server library; and the client imports and runs with those
libraries made unimportable.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CLIENT = Path(__file__).resolve().parent.parent
SERVER_ONLY = {"pyramid", "sqlalchemy", "waitress", "alembic", "pyramid-tm", "pyramid-retry",
               "zope-sqlalchemy", "zope-interface", "transaction", "pydantic", "pluggy",
               "modelreg", "webob", "pastedeploy"}


def declared_requirements() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(CLIENT / "setup.cfg", encoding="utf-8")
    lines = parser["options"]["install_requires"].splitlines()
    return [Requirement(line) for line in (x.split("#")[0].strip() for x in lines) if line]


def resolved_closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in (no extras), from installed metadata."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.requires(requirement.name) or []]
    return seen


def test_the_client_depends_on_nothing_of_the_server():
    declared = declared_requirements()
    assert {canonicalize_name(r.name) for r in declared} >= {"click", "requests", "rich"}
    closure = resolved_closure(declared)
    assert "urllib3" in closure
    assert not closure & SERVER_ONLY, sorted(closure & SERVER_ONLY)


def test_the_client_runs_with_the_server_libraries_unimportable(tmp_path):
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        BLOCKED = {sorted(n.replace('-', '_') for n in SERVER_ONLY)!r}

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED:
                    raise ImportError('blocked: ' + name)
                return None

        sys.meta_path.insert(0, Block())
        import modelreg_client
        for module in pkgutil.iter_modules(modelreg_client.__path__):
            importlib.import_module('modelreg_client.' + module.name)
        from click.testing import CliRunner
        from modelreg_client.cli import main
        for command in (['push', '--help'], ['pull', '--help'], ['login', '--help']):
            result = CliRunner().invoke(main, command)
            assert result.exit_code == 0, result.output
        print('ok')
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
