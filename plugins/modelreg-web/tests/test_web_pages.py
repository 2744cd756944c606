"""The web UI over WebTest: sessions, CSRF, cookies the JSON API ignores, grants, the
sanitized card, downloads, the alias form, security headers."""

from __future__ import annotations

from typing import Any

from webui_support import API, WEB_PLUGINS, World

HTML = {"Accept": "text/html"}


def assert_harmless(page: Any) -> None:
    """No stored script made it into ``page`` as markup: the only scripts are the UI's
    own file, no element has an event handler, no link a ``javascript:`` URL."""
    assert "<script>window" not in page.text
    scripts = [tag.get("src") for tag in page.html.find_all("script")]
    assert scripts == ["/ui/static/app.js"], scripts
    for tag in page.html.find_all(True):
        assert not [a for a in tag.attrs if a.lower().startswith("on")], tag
        for attr in ("href", "src", "action"):
            assert not str(tag.get(attr, "")).lower().startswith("javascript:"), tag


def test_home_is_html_for_browsers_and_json_404_for_api_clients(world: World) -> None:
    browser = world.browser()
    api = browser.get("/", headers={"Accept": "application/json"}, status=404)
    assert api.content_type == "application/json" and "error" in api.json
    assert browser.get("/", status=404).content_type == "application/json"
    # anonymous reads are off here: the home page asks to sign in
    page = browser.get("/", headers=HTML, status=303)
    assert "/ui/signin" in page.location


def test_undecodable_paths_are_400_in_the_ui_and_in_the_api(world: World) -> None:
    # The UI's response headers must not decode the path itself: before, /api/v1/models/%ff
    # answered 500 once the UI was installed.
    browser = world.browser()
    api = browser.get(f"{API}/models/%ff%fe", status=400)
    assert api.json["error"]["code"] == "invalid_encoding"
    for path in ("/ui/%ff", "/ui/models/%c0%ae", "/ui/models?q=%ff"):
        page = browser.get(path, headers=HTML, status=400)
        assert page.content_type == "text/html", path
        assert "Content-Security-Policy" in page.headers, path


def test_sign_in_makes_a_server_side_session_for_ui_routes_only(world: World) -> None:
    browser = world.browser("bob")
    cookie = next(c for c in browser.cookiejar if c.name == "modelreg_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure
    page = browser.get("/", headers=HTML)
    assert "Signed in as" in page.text and "fraud-detector" in page.text
    # the JSON API ignores the cookie (no cross-site requests with it)
    browser.get(f"{API}/models", status=401)
    # sign out ends the session
    signout = page.forms[0] if page.forms[0].action.endswith("signout") else None
    assert signout is not None
    signout.submit(status=303)
    assert browser.get("/ui/models", headers=HTML, status=303).location.endswith(
        "next=%2Fui%2Fmodels")


def test_cookie_is_secure_behind_tls(world: World) -> None:
    browser = world.browser("bob", **{"wsgi.url_scheme": "https"})
    cookie = next(c for c in browser.cookiejar if c.name == "modelreg_session")
    assert cookie.secure


def test_wrong_token_and_missing_csrf_are_refused(world: World) -> None:
    browser = world.browser()
    form = browser.get("/ui/signin", headers=HTML).forms[0]
    form["token"] = "mr_nope_nope"  # noqa: S105 - a token that does not exist
    refused = form.submit(status=401)
    assert "malformed" in refused.text or "invalid" in refused.text
    # no CSRF token: refused, and no session
    answer = browser.post("/ui/signin", {"token": world.tokens["bob"]}, status=403)
    assert "CSRF" in answer.text
    assert not any(c.name == "modelreg_session" for c in browser.cookiejar)
    signed = world.browser("alice")
    page = signed.get("/ui/models/fraud-detector", headers=HTML)
    form = page.forms["alias-form"]
    form["csrf_token"] = "forged"  # noqa: S105 - a wrong CSRF value
    form["alias"] = "staging"
    assert "CSRF" in form.submit(status=403).text


def test_revoking_the_token_ends_the_session(world: World) -> None:
    browser = world.browser("bob2")
    browser.get("/", headers=HTML, status=200)
    token_id = world.tokens["bob2"].split("_")[1]
    world.api("root").post(f"{API}/admin/tokens/{token_id}/revoke")
    ended = browser.get("/", headers=HTML, status=303)
    assert "session+ended" in ended.location or "session%20ended" in ended.location
    assert browser.get("/", headers=HTML, status=303)  # the cookie is gone too


def test_grants_apply_as_in_the_api(world: World) -> None:
    bob = world.browser("bob")
    home = bob.get("/", headers=HTML)
    assert "secret-model" not in home.text
    hidden = bob.get("/ui/models/secret-model", headers=HTML, status=404)
    missing = bob.get("/ui/models/no-such-model", headers=HTML, status=404)
    assert hidden.html.find("main").text.replace("secret-model", "X") == \
        missing.html.find("main").text.replace("no-such-model", "X")
    root = world.browser("root")
    assert "secret-model" in root.get("/", headers=HTML).text
    # a reader sees no alias form; posting one anyway is refused
    page = bob.get("/ui/models/fraud-detector", headers=HTML)
    assert "alias-form" not in page.text
    refused = bob.post("/ui/models/fraud-detector/aliases",
                       {"alias": "x", "version": "1",
                        "csrf_token": page.html.find("input", {"name": "csrf_token"})["value"]},
                       status=403)
    assert "may not write" in refused.text


def test_card_is_sanitized_and_links_resolve_to_files(world: World) -> None:
    page = world.browser("bob").get("/ui/models/fraud-detector", headers=HTML)
    card = page.html.find("article", class_="markdown")
    assert card.find("table") is not None and card.find("h1").text == "Fraud detector"
    assert_harmless(page)
    img = card.find("img", alt="diagram")
    assert img["src"] == "/ui/models/fraud-detector/versions/2/files/docs/diagram.svg"
    sizes = [td.text for tr in page.html.find("table", class_="versions").find_all("tr")[1:]
             for td in tr.find_all("td")[4:5]]
    assert all("(4 files)" in s for s in sizes) and len(sizes) == 2, sizes
    csp = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp


def test_download_is_an_attachment_that_cannot_script(world: World) -> None:
    bob = world.browser("bob")
    svg = bob.get("/ui/models/fraud-detector/versions/2/files/docs/diagram.svg")
    assert svg.body.startswith(b"<svg")
    assert svg.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in svg.headers["Content-Security-Policy"]
    assert svg.headers["X-Content-Type-Options"] == "nosniff"


def test_filter_errors_show_inline(world: World) -> None:
    page = world.browser("bob").get("/ui/models", {"filter": "name = "}, headers=HTML,
                                    status=400)
    error = page.html.find(id="filter-error")
    assert error is not None and error.text.strip()
    found = world.browser("bob").get("/ui/models", {"q": "fraud"}, headers=HTML)
    assert "fraud-detector" in found.text


def test_alias_move_as_writer_shows_in_history(world: World) -> None:
    alice = world.browser("alice")
    page = alice.get("/ui/models/fraud-detector", headers=HTML)
    form = page.forms["alias-form"]
    form["alias"] = "production"
    form["version"] = "2"
    moved = form.submit(status=303).follow(headers=HTML)
    history = moved.html.find("ol", class_="history").text
    assert "@production" in history and "v2" in history and "alice" in history
    assert world.api("root").get(f"{API}/models/fraud-detector/aliases/production"
                                 ).json["version"] == 2


def test_version_compare_tokens_and_admin_pages(world: World) -> None:
    bob = world.browser("bob")
    version = bob.get("/ui/models/fraud-detector/versions/2", headers=HTML)
    assert "fraud-detector@sha256:" in version.text and "run-2" in version.text
    assert_harmless(version)
    compare = bob.get("/ui/models/fraud-detector/compare", {"a": "1", "b": "2"},
                      headers=HTML)
    assert "metadata.metrics.auc" in compare.text and "changed" in compare.text
    tokens = bob.get("/ui/tokens", headers=HTML)
    form = tokens.forms[1]
    assert [o[0] for o in form["scope"].options] == ["read"]  # never above the session's
    made = form.submit(status=201)
    assert made.html.find(id="new-token")["value"].startswith("mr_")
    bob.get("/ui/admin", headers=HTML, status=403)
    root = world.browser("root")
    admin = root.get("/ui/admin", headers=HTML)
    assert "alice" in admin.text and "fraud-*" in admin.text
    audit = root.get("/ui/admin/audit", {"action": "alias.moved"}, headers=HTML)
    assert audit.status_int == 200


def test_anonymous_browsing_follows_the_ini(world: World, web_settings) -> None:
    import webtest

    from modelreg.testing import make_app

    app = make_app({**web_settings, "modelreg.auth.anonymous": "read"}, WEB_PLUGINS)
    try:
        browser = webtest.TestApp(app)
        home = browser.get("/", headers=HTML)
        assert "fraud-detector" in home.text and "Sign in" in home.text
        page = browser.get("/ui/models/fraud-detector", headers=HTML)
        assert "alias-form" not in page.text  # reading only
        browser.get("/ui/tokens", headers=HTML, status=303)  # tokens need a session
    finally:
        app.registry["db_engine"].dispose()


def test_admins_manage_anyones_tokens_and_unknown_pages_are_html(world: World) -> None:
    root = world.browser("root")
    page = root.get("/ui/tokens", {"principal": "alice"}, headers=HTML)
    assert "API tokens of alice" in page.text
    form = page.forms[1]
    form["scope"] = "write"
    form["description"] = "made by root"
    made = form.submit(status=201)
    secret = made.html.find(id="new-token")["value"]
    token_id = made.html.find("div", class_="notice").find("strong").text
    assert world.api("root").get(f"{API}/models", headers={
        "Authorization": f"Bearer {secret}"}).status_int == 200
    csrf = made.html.find("input", {"name": "csrf_token"})["value"]
    back = root.post(f"/ui/tokens/{token_id}/revoke", {"csrf_token": csrf}, status=303)
    assert back.location.endswith("/ui/tokens?principal=alice")
    world.api("root").get(f"{API}/models", headers={"Authorization": f"Bearer {secret}"},
                          status=401)
    # alice cannot see bob's tokens: her own page instead
    alice = world.browser("alice")
    assert "Your API tokens" in alice.get("/ui/tokens", {"principal": "bob"},
                                           headers=HTML).text
    missing = alice.get("/ui/no-such-page", headers=HTML, status=404)
    assert missing.content_type == "text/html" and "Not found" in missing.text
    assert "unsafe-inline" not in missing.headers["Content-Security-Policy"]


PAGES = ("/", "/ui/models?filter=name%20%3D", "/ui/models/fraud-detector",
         "/ui/models/fraud-detector/versions/2", "/ui/models/fraud-detector/compare?a=1&b=2",
         "/ui/tokens", "/ui/admin", "/ui/admin/audit", "/ui/models/no-such-model",
         "/ui/no-such-page")


def test_pages_parse_without_html_errors(world: World) -> None:
    """Every page is HTML5 without a single parse error (html5lib's strict parser: no
    stray or unclosed tags, duplicate attributes, bad nesting)."""
    import html5lib

    root = world.browser("root")
    for path in ("/ui/signin", *PAGES):
        page = root.get(path, headers=HTML, expect_errors=True)
        assert page.content_type == "text/html", path
        html5lib.HTMLParser(strict=True).parse(page.body)


def test_admins_add_principals_and_grants(world: World) -> None:
    root = world.browser("root")
    admin = root.get("/ui/admin", headers=HTML)
    form = admin.forms["principal-form"]
    form["name"] = "carol"
    assert form.submit(status=303)
    admin = root.get("/ui/admin", headers=HTML)
    grant = admin.forms["grant-form"]
    grant["subject"], grant["pattern"], grant["level"] = "carol", "churn-*", "write"
    grant.submit(status=303)
    grants = world.api("root").get(f"{API}/admin/grants", {"principal": "carol"}).json[
        "grants"]
    assert [(g["pattern"], g["level"]) for g in grants] == [("churn-*", "write")]
    # a wrong level is refused inline, nothing written
    admin = root.get("/ui/admin", headers=HTML)
    grant = admin.forms["grant-form"]
    grant["subject"], grant["pattern"] = "nobody-at-all", "x"
    refused = grant.submit(status=404)
    assert refused.html.find(class_="error").text.strip()
    # deleting it
    page = root.get("/ui/admin", headers=HTML)
    csrf = page.html.find("input", {"name": "csrf_token"})["value"]
    root.post("/ui/admin", {"csrf_token": csrf, "action": "revoke-grant",
                            "grant": str(grants[0]["id"])}, status=303)
    assert world.api("root").get(f"{API}/admin/grants", {"principal": "carol"}).json[
        "grants"] == []
    # not for others
    bob = world.browser("bob")
    own = bob.get("/ui/tokens", headers=HTML).html.find("input", {"name": "csrf_token"})
    refused = bob.post("/ui/admin", {"csrf_token": own["value"], "action": "principal",
                                     "name": "eve"}, status=403)
    assert "may not admin" in refused.text
