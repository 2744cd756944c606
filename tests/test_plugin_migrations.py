"""docs/plugins.md's plugin that owns a table: its migration branch runs with the core's."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import sqlalchemy as sa

from modelreg.testing import CORE_PLUGINS, TestDatabase, make_plugin_manager

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"^```\w* file=(?P<path>\S+)\n(?P<body>.*?)^```$", re.M | re.S)


def section_files() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Plugins that own tables")
    section = text[start:text.index("\n## ", start + 1)]
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(section)}


def test_the_documented_plugin_migrates_its_own_table(tmp_path, monkeypatch):
    files = section_files()
    assert set(files) == {"modelreg_audit/__init__.py", "modelreg_audit/tables.py",
                          "modelreg_audit/migrations/audit_0001_entries.py"}
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    (tmp_path / "modelreg_audit" / "migrations" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        plugin = importlib.import_module("modelreg_audit")
        tables = importlib.import_module("modelreg_audit.tables")
        make_plugin_manager([plugin])  # the hook implementation matches its spec
        db = TestDatabase.create("sqlite", [*CORE_PLUGINS, plugin])
        try:
            engine = db.engine()
            with engine.connect() as conn:
                heads = {row[0] for row in conn.execute(
                    sa.text("SELECT version_num FROM alembic_version"))}
            assert "audit_0001" in heads and len(heads) == 2
            inspector = sa.inspect(engine)
            columns = {c["name"] for c in inspector.get_columns("audit_entries")}
            assert columns == {c.name for c in tables.entries.columns}
            assert inspector.get_pk_constraint("audit_entries")["name"] == "pk_audit_entries"
            with engine.begin() as conn:
                conn.execute(tables.entries.insert().values(
                    model="fraud", event_id="e" * 36, created_at=sa.func.now()))
        finally:
            db.drop()
    finally:
        for name in [n for n in sys.modules if n.startswith("modelreg_audit")]:
            del sys.modules[name]
