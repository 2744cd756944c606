"""First-party plugins use the public API only, as a third party's would (docs/plugins.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ("modelreg.api", "modelreg.testing")


def modelreg_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import of something in the ``modelreg`` package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "modelreg":  # from modelreg import api -> modelreg.api
                names = [f"modelreg.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__")):
            names = [node.args[0].value]  # importlib.import_module("modelreg.db")
        else:
            continue
        found += [(node.lineno, name) for name in names
                  if name == "modelreg" or name.startswith("modelreg.")]
    return found


def allowed(module: str) -> bool:
    return any(module == ok or module.startswith(ok + ".") for ok in ALLOWED)


def test_plugins_import_only_the_public_api():
    sources = sorted((ROOT / "plugins").glob("*/**/*.py"))
    assert sources, "no plugin sources found"
    offences = [f"{path.relative_to(ROOT)}:{line}: {module}"
                for path in sources for line, module in modelreg_imports(path)
                if not allowed(module)]
    assert offences == [], "plugins may import only modelreg.api and modelreg.testing"


def test_every_plugin_is_checked():
    """Each plugin under plugins/ (and the test plugins of tests/ built on the public API)
    has its sources under the check: a plugin with another layout cannot slip through."""
    plugins = sorted(path for path in (ROOT / "plugins").iterdir() if path.is_dir())
    assert plugins, "no plugins found"
    for plugin in plugins:
        sources = list(plugin.glob("**/*.py"))
        assert any("src" in s.relative_to(plugin).parts or s.parent == plugin
                   for s in sources), f"{plugin.name}: no sources checked"
    for path in (ROOT / "tests" / "pluginapi_plugin.py", ROOT / "tests" / "identity_plugin.py"):
        assert [m for _, m in modelreg_imports(path) if not allowed(m)] == [], path


def test_the_check_catches_internal_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import modelreg.db\nfrom modelreg import config\n"
                   "from modelreg.storage.local import LocalBlobStore\n"
                   "from modelreg import api\nfrom modelreg.api import hookimpl\n"
                   "import importlib\nimportlib.import_module('modelreg.files.gc')\n")
    assert [m for _, m in modelreg_imports(bad) if not allowed(m)] == [
        "modelreg.db", "modelreg.config", "modelreg.storage.local", "modelreg.files.gc"]
