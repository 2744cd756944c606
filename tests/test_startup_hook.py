"""``modelreg_startup``: plugins' start-up checks run in every process that assembles the
app (the web app, ``modelreg worker`` and the admin commands), and a check that raises stops
start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import modelreg.config
from modelreg.api import hookimpl
from modelreg.testing import CORE_PLUGINS, make_app
from modelreg_client.cli import main

ROOT = Path(__file__).resolve().parent.parent


class StartupCheck:
    """Records each start-up; refuses when ``refuse`` is set."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.refuse = refuse

    @hookimpl
    def modelreg_startup(self, settings: dict[str, Any], registry: Any) -> None:
        self.calls.append((settings, registry))
        if self.refuse:
            raise RuntimeError(self.refuse)


def test_the_web_app_runs_the_check_once_with_its_registry(tmp_path):
    check = StartupCheck()
    app = make_app({"sqlalchemy.url": f"sqlite:///{tmp_path / 'r.sqlite'}",
                    "modelreg.storage.local.path": str(tmp_path / "blobs")},
                   [*CORE_PLUGINS, check])
    try:
        assert len(check.calls) == 1
        settings, registry = check.calls[0]
        assert registry is app.registry and settings["sqlalchemy.url"].startswith("sqlite")
    finally:
        app.registry["db_engine"].dispose()


def test_a_check_that_raises_stops_the_app(tmp_path):
    with pytest.raises(RuntimeError, match=r"modelreg\.example\.key is missing"):
        make_app({"sqlalchemy.url": f"sqlite:///{tmp_path / 'r.sqlite'}",
                  "modelreg.storage.local.path": str(tmp_path / "blobs")},
                 [*CORE_PLUGINS, StartupCheck(refuse="modelreg.example.key is missing")])


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    """development.ini over a fresh, migrated SQLite database in ``tmp_path``."""
    text = (ROOT / "development.ini").read_text().replace(
        "sqlite:///%(here)s/var/modelreg.sqlite", f"sqlite:///{tmp_path / 'r.sqlite'}")
    path = tmp_path / "registry.ini"
    path.write_text(text)
    assert CliRunner().invoke(main, ["db", "upgrade", str(path)]).exit_code == 0
    return path


@pytest.fixture
def with_plugin(monkeypatch):
    """Add a plugin to every plugin manager that configure() builds in this test."""
    def install(plugin: Any) -> None:
        build = modelreg.config.get_plugin_manager

        def with_it(settings, **kwargs):
            kwargs["plugins"] = [*kwargs.get("plugins", ()), plugin]
            return build(settings, **kwargs)

        monkeypatch.setattr(modelreg.config, "get_plugin_manager", with_it)
    return install


@pytest.mark.parametrize("command", [["worker", "--once"], ["users", "list"]])
def test_the_worker_and_admin_commands_run_the_check(ini, with_plugin, command):
    check = StartupCheck()
    with_plugin(check)
    result = CliRunner().invoke(main, [*command, str(ini)])
    assert result.exit_code == 0, result.output
    assert len(check.calls) == 1


def test_a_check_that_raises_stops_a_command(ini, with_plugin):
    with_plugin(StartupCheck(refuse="modelreg.example.key is missing"))
    result = CliRunner().invoke(main, ["users", "list", str(ini)])
    assert result.exit_code != 0
    assert "modelreg.example.key is missing" in str(result.exception)
