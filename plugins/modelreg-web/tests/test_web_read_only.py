"""The pages declared read-only (``modelreg.api.add_read_only_view``): exactly those that only
read the database run outside pyramid_tm, and they answer as before (the rest of this
directory, WebTest and Chromium, runs over them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import webtest
from pyramid.interfaces import IRoutesMapper
from webui_support import API, WEB_PLUGINS, World

from modelreg.testing import TransactionRecorder, make_app

HTML = {"Accept": "text/html"}
#: The GET pages that only read the database.  Not ``web.model`` (the model card's bytes
#: come from the blob store) nor ``web.file`` (a download).
READ_ONLY = {"web.home", "web.models", "web.signin", "web.tokens", "web.admin", "web.audit",
             "web.compare", "web.version"}
#: A GET of each route of the UI (its POST-only routes apart).
SAMPLES = {
    "web.home": "/",
    "web.models": "/ui/models?q=fraud",
    "web.signin": "/ui/signin",
    "web.tokens": "/ui/tokens",
    "web.admin": "/ui/admin",
    "web.audit": "/ui/admin/audit",
    "web.model": "/ui/models/fraud-detector",
    "web.compare": "/ui/models/fraud-detector/compare?a=1&b=2",
    "web.version": "/ui/models/fraud-detector/versions/2",
    "web.file": "/ui/models/fraud-detector/versions/2/files/config.json",
}
POST_ONLY = {"web.signout", "web.revoke", "web.alias"}


@pytest.fixture(scope="module")
def recorded(web_settings: dict[str, Any], world: World
             ) -> Iterator[tuple[Any, TransactionRecorder]]:
    """An app of its own over the world's database, with the recorder."""
    recorder = TransactionRecorder()
    app = make_app(web_settings, (*WEB_PLUGINS, recorder))
    yield app, recorder
    app.registry["db_engine"].dispose()


def _browser(app: Any, token: str) -> webtest.TestApp:
    browser = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    form = browser.get("/ui/signin", headers=HTML).forms[0]
    form["token"] = token
    assert form.submit().status_int == 303
    return browser


def test_exactly_the_read_only_pages_run_outside_pyramid_tm(recorded, world: World) -> None:
    app, recorder = recorded
    routes = {route.name for route in app.registry.getUtility(IRoutesMapper).get_routes()
              if route.name.startswith("web.")}
    assert routes == set(SAMPLES) | POST_ONLY  # a new page is decided on here
    root = _browser(app, world.tokens["root"])
    recorder.seen.clear()
    for route, path in SAMPLES.items():
        answer = root.get(path, headers=HTML)
        assert answer.status_int == 200, (route, answer.status)
    outside = {name for name, method, active in recorder.seen if not active}
    assert outside == READ_ONLY
    assert {name for name, _, _ in recorder.seen} == set(SAMPLES)
    # HEAD with GET; the sign-in form's POST stays in pyramid_tm
    recorder.seen.clear()
    root.head("/ui/models", headers=HTML, status=200)
    _browser(app, world.tokens["bob"])
    assert recorder.seen == [("web.models", "HEAD", False), ("web.signin", "GET", False),
                             ("web.signin", "POST", True)]


def test_a_read_only_page_answers_outside_pyramid_tm(recorded, world: World) -> None:
    app, recorder = recorded
    bob = _browser(app, world.tokens["bob"])
    recorder.seen.clear()
    page = bob.get("/ui/models/fraud-detector/versions/1", headers=HTML)
    assert recorder.seen == [("web.version", "GET", False)]
    assert "fraud-detector" in page.text and "config.json" in page.text
    assert bob.get("/ui/models/secret-model/versions/1", headers=HTML,
                   status=404).html.find("main") is not None


def test_a_refused_session_on_a_read_only_page_signs_in_again(recorded, world: World
                                                               ) -> None:
    # The token is refused: a read-only page cannot delete the session's row, so it drops
    # the cookie (the row expires on its own); an ordinary page deletes both.
    app, _recorder = recorded
    root = world.api("root")
    root.post_json(f"{API}/admin/principals", {"name": "read-only-carol"})
    for path in ("/ui/models", "/ui/models/fraud-detector"):
        token = root.post_json(f"{API}/admin/tokens", {"principal": "read-only-carol",
                                                       "scopes": ["read"]}).json["token"]
        browser = _browser(app, token)
        browser.get("/ui/models", headers=HTML, status=200)
        root.post(f"{API}/admin/tokens/{token.split('_')[1]}/revoke")
        ended = browser.get(path, headers=HTML, status=303)
        assert "session+ended" in ended.location or "session%20ended" in ended.location
        assert not any(c.name == "modelreg_session" for c in browser.cookiejar)
        again = browser.get(path, headers=HTML, status=303)
        assert "ended" not in again.location
