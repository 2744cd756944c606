"""docs/plugins.md documents every hook (with each of its arguments) and the public API."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy

from modelreg import api, hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def hook_sections() -> dict[str, str]:
    """``### modelreg_*`` sections of the document, by hook name."""
    parts = re.split(r"^### (modelreg_\w+)\n", DOC, flags=re.M)
    return {name: body.split("\n## ")[0] for name, body in zip(parts[1::2], parts[2::2],
                                                                strict=True)}


def specs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {name: obj for name, obj in vars(hookspecs).items()
            if name.startswith("modelreg_") and hasattr(obj, marker)}


def test_every_hook_has_a_section_and_no_section_is_stale():
    assert set(hook_sections()) == set(specs())


def test_each_section_names_every_argument_and_the_calling_convention():
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    for name, spec in specs().items():
        section = hook_sections()[name]
        arguments = list(inspect.signature(spec).parameters)
        assert f"`{name}({', '.join(arguments)})`" in section, name
        for argument in arguments:
            assert f"`{argument}`" in section, (name, argument)
        assert re.search(r"^\* Returns|^\* Takes no arguments", section, re.M), name
        firstresult = getattr(spec, marker).get("firstresult", False)
        assert ("**firstresult**" in section) == firstresult, name
        experimental = "EXPERIMENTAL" in (spec.__doc__ or "")
        assert ("**EXPERIMENTAL**" in section) == experimental, name


def test_the_context_table_lists_every_hook():
    table = DOC[DOC.index("| hook | when |"):]
    table = table[:table.index("\n\n")]
    assert {row.split("`")[1] for row in table.splitlines()[2:]} == set(specs())


def test_every_public_api_name_is_documented():
    for name in api.__all__:
        assert f"`{name}`" in DOC, name


def test_the_test_kit_is_documented():
    import modelreg.testing as kit

    for name in ("make_app", "make_plugin_manager", "HookRecorder", "TestDatabase",
                 "BlobStoreContract", "CORE_PLUGINS", "modelreg_plugins", "modelreg_database",
                 "modelreg_settings", "modelreg_app", "testapp", "hook_recorder",
                 "TransactionRecorder", "routes_with_views", "counting_statements"):
        assert hasattr(kit, name), name
        assert f"`{name}" in DOC, name


def test_names_in_the_document_are_the_real_ones():
    from modelreg.plugins import DISABLED_SETTING, ENTRYPOINT_GROUP

    assert f"`{ENTRYPOINT_GROUP}` entry-point group" in DOC
    assert f"{DISABLED_SETTING} = " in DOC
    assert isinstance(api.hookimpl, pluggy.HookimplMarker)


def test_the_readme_links_the_plugin_guide():
    assert "(docs/plugins.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
