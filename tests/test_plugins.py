"""The plugin manager: specs, entry points, blocking, misspelt hooks, validation hooks."""

from __future__ import annotations

import types

import pluggy
import pytest
import webtest

from helpers import API, add_file, create_model, create_version
from modelreg import api, hookspecs
from modelreg.plugins import ENTRYPOINT_GROUP, describe_plugins, get_plugin_manager
from modelreg.testing import CORE_PLUGINS, clear_database, make_app, resolve_plugins


def test_names_derive_from_one_place():
    assert ENTRYPOINT_GROUP == hookspecs.PROJECT_NAME == "modelreg"
    for name in dir(hookspecs):
        if name.startswith("modelreg_"):
            assert getattr(hookspecs, name).__doc__, f"hook {name} has no docstring"


def test_core_validators_are_an_entry_point_plugin():
    pm = get_plugin_manager({})
    assert "builtin-validators" in dict(pm.list_name_plugin())
    rows = {row["name"]: row for row in describe_plugins(pm)}
    assert rows["builtin-validators"]["distribution"] == "modelreg"


def test_disabled_setting_blocks_a_plugin():
    pm = get_plugin_manager({"modelreg.plugins.disabled": "builtin-validators"})
    assert pm.is_blocked("builtin-validators")
    assert pm.hook.modelreg_validate_version.get_hookimpls() == []


def test_misspelt_hook_fails_at_start():
    bad = types.ModuleType("bad_plugin")

    @api.hookimpl
    def modelreg_validate_modle(model):  # misspelt on purpose
        return []

    bad.modelreg_validate_modle = modelreg_validate_modle
    with pytest.raises(pluggy.PluginValidationError):
        get_plugin_manager({}, load_entrypoints=False, plugins=[bad])


def test_a_plugin_adds_problems_and_routes(modelreg_database):
    """A plugin written against modelreg.api only: validation plus its own view."""

    class Plugin:
        @api.hookimpl
        def modelreg_validate_version(self, version):
            if "framework" not in version["metadata"]:
                return [api.Problem("no_framework", "say which framework", "metadata")]
            return None

        @api.hookimpl
        def modelreg_validate_model(self, model):
            if model["name"].startswith("tmp"):
                return [api.Problem("temporary", "no temporary models", "name")]
            return []

        @api.hookimpl
        def modelreg_pyramid_configure(self, config):
            config.add_route("hello", "/hello")
            config.add_view(lambda request: {"hello": "plugin"}, route_name="hello",
                            renderer="json", permission="read")

    app = make_app({"sqlalchemy.url": modelreg_database.url}, [*CORE_PLUGINS, Plugin()])
    try:
        test = webtest.TestApp(app)
        assert test.get("/hello").json == {"hello": "plugin"}
        response = test.post_json(f"{API}/models", {"name": "tmp-1"}, status=422)
        assert response.json["error"]["details"]["problems"][0]["code"] == "temporary"
        create_model(test, "real")
        create_version(test, "real")
        add_file(test, "real", 1)
        body = test.post(f"{API}/models/real/versions/1/finalize").json
        assert body["status"] == "rejected"
        assert body["problems"] == [
            {"code": "no_framework", "message": "say which framework", "field": "metadata"}]
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


def test_resolve_plugins_imports_dotted_names():
    (module,) = resolve_plugins(["modelreg.validation.builtin"])
    assert module.__name__ == "modelreg.validation.builtin"
