"""First-party plugins use the public plugin API only, as a third party must."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ("modelreg.api", "modelreg.testing")


def imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def is_public(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PUBLIC)


def test_plugins_import_only_the_public_api():
    leaks = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for lineno, module in imported_modules(tree):
            if (module == "modelreg" or module.startswith("modelreg.")) and not is_public(module):
                leaks.append(f"{path.relative_to(ROOT)}:{lineno}: {module}")
    assert leaks == [], "plugins reach into modelreg internals:\n" + "\n".join(leaks)


def test_the_check_catches_a_leak(tmp_path):
    tree = ast.parse("from modelreg.db import get_engine\nimport modelreg.api\n")
    found = [m for _, m in imported_modules(tree) if not is_public(m)]
    assert found == ["modelreg.db"]
