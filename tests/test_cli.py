"""The ``modelreg`` command: the server's admin subcommands through entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from modelreg_client.cli import main

ROOT = Path(__file__).resolve().parent.parent


def write_ini(tmp_path: Path, url: str, extra: str = "") -> Path:
    text = (ROOT / "development.ini").read_text()
    text = text.replace("sqlite:///%(here)s/var/modelreg.sqlite", url)
    ini = tmp_path / "test.ini"
    disabled = "modelreg.plugins.disabled ="
    ini.write_text(text.replace(disabled, f"{disabled} {extra}"))
    return ini


def test_help_lists_server_subcommands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "db" in result.output and "plugins" in result.output


def test_db_upgrade_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'registry.sqlite'}"
    ini = write_ini(tmp_path, url)
    result = CliRunner().invoke(main, ["db", "upgrade", str(ini)])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"models", "versions", "aliases", "alias_history", "audit_events", "outbox",
            "alembic_version"} <= tables


def test_plugins_lists_and_honours_disabled(tmp_path):
    ini = write_ini(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite'}")
    result = CliRunner().invoke(main, ["plugins", str(ini), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert "builtin-validators" in {p["name"] for p in listed["plugins"]}
    ini = write_ini(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite'}", "builtin-validators")
    listed = json.loads(CliRunner().invoke(main, ["plugins", str(ini), "--json"]).output)
    assert "builtin-validators" not in {p["name"] for p in listed["plugins"]}
    assert listed["disabled"] == ["builtin-validators"]


def test_plugins_shows_the_backends_and_the_active_one(tmp_path):
    """The backend's name (what ``modelreg.storage`` takes, not the entry point's name),
    its description, and which one is active."""
    ini = write_ini(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite'}")
    result = CliRunner().invoke(main, ["plugins", str(ini), "--json"])
    listed = json.loads(result.output)
    local = next(b for b in listed["backends"] if b["name"] == "local")
    assert local["active"] is True and "local directory" in local["description"]
    assert listed["storage"] == "local"
    text = CliRunner().invoke(main, ["plugins", str(ini)]).output
    assert "storage backends (modelreg.storage = <name>):" in text
    assert any(line.startswith("* local ") for line in text.splitlines())


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "modelreg"
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "modelreg" in result.stdout
