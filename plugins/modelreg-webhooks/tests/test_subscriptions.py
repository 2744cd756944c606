"""The REST API of subscriptions: CRUD, write-only secrets, refused targets, admin only."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import SECRET
from modelreg.testing import make_app

W = "/api/v1/webhooks"


def test_crud_and_the_secret_is_never_returned(admin):
    created = admin.post_json(W, {"url": "http://127.0.0.1:9/hook", "secret": SECRET,
                                  "events": ["version.*", "alias.set"],
                                  "description": "ci"}, status=201).json
    assert "secret" not in created
    assert created["events"] == ["version.*", "alias.set"]
    assert created["active"] is True and created["has_secret"] is True
    assert created["created_by"] == "root"
    sub = created["id"]
    listed = admin.get(W).json["webhooks"]
    assert [w["id"] for w in listed] == [sub]
    patched = admin.patch_json(f"{W}/{sub}", {"active": False, "secret": "x" * 20}).json
    assert patched["active"] is False
    for answer in (listed[0], patched, admin.get(f"{W}/{sub}").json):
        assert SECRET not in str(answer) and "x" * 20 not in str(answer)
        assert "secret" not in answer
    admin.delete(f"{W}/{sub}", status=204)
    admin.get(f"{W}/{sub}", status=404)
    assert admin.get(W).json["webhooks"] == []


def test_a_generated_secret_is_shown_once(admin):
    created = admin.post_json(W, {"url": "http://127.0.0.1:9/"}, status=201).json
    assert len(created["secret"]) >= 32
    assert "secret" not in admin.get(f"{W}/{created['id']}").json


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://u:p@127.0.0.1/"}, "url"),
    ({"url": "http://127.0.0.1/", "events": []}, "events"),
    ({"url": "http://127.0.0.1/", "secret": "short"}, "secret"),
    ({"url": "http://127.0.0.1/", "active": "yes"}, "active"),
])
def test_invalid_subscriptions_are_refused(admin, body, field):
    answer = admin.post_json(W, body, status=422).json
    assert [p["field"] for p in answer["error"]["details"]["problems"]] == [field]


def test_unknown_fields_are_refused(admin):
    admin.post_json(W, {"url": "http://127.0.0.1/", "secrets": "x"}, status=422)


@pytest.fixture
def strict_admin(webhooks_settings: dict[str, Any], webhooks_plugins, admin):
    """An app without ``modelreg.webhooks.allow_private``."""
    import webtest

    settings = {**webhooks_settings, "modelreg.webhooks.allow_private": "false"}
    app = make_app(settings, webhooks_plugins)
    yield webtest.TestApp(app, extra_environ=admin.extra_environ)
    app.registry["db_engine"].dispose()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://172.16.5.4/", "http://169.254.169.254/latest/meta-data", "http://[::1]/",
    "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://224.0.0.1/",
    "http://240.0.0.1/", "https://100.64.0.1/",
    # IPv6 addresses that carry a loopback, private or link-local IPv4 address, site-local
    "http://[2002:7f00:1::1]/", "http://[2002:a00:1::]/", "http://[2002:a9fe:a9fe::1]/",
    "http://[::127.0.0.1]/", "http://[::ffff:0:7f00:1]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2001:0:7f00:1::1]/", "http://[fec0::1]/", "http://[fed0::1]/",
    "http://[64:ff9b:1::808:808]/",
])
def test_private_targets_are_refused_without_the_setting(strict_admin, url):
    answer = strict_admin.post_json(W, {"url": url}, status=422).json
    (problem,) = answer["error"]["details"]["problems"]
    assert problem["field"] == "url"
    assert "allow_private" in problem["message"]


def test_public_targets_are_accepted_without_the_setting(strict_admin):
    strict_admin.post_json(W, {"url": "https://93.184.215.14/hook"}, status=201)


def test_only_global_admins_manage_webhooks(webhooks_app, admin):
    import webtest

    anonymous = webtest.TestApp(webhooks_app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    anonymous.get(W, status=401)
    anonymous.post_json(W, {"url": "http://127.0.0.1/"}, status=401)
    assert admin.get(W).json["webhooks"] == []
