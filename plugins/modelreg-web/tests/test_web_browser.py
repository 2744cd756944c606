"""The web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright's
client) against a live Waitress: sign in, search (and an inline filter error), a model and
its sanitized card, a version, a download, an alias moved by a writer, "not found" for a
model the reader may not see, a form refused without its CSRF token, and no stored script
ever running.  A screenshot of each page goes to the test's temporary directory (and, with
``MODELREG_UI_SCREENSHOTS=<dir>``, there: ``docs/ui/`` is made that way).

Skips when Chromium or Playwright is missing, except with ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webui_support import WEB_PLUGINS, World

from modelreg.testing import unavailable
from modelreg.testing.server import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def live(web_settings: dict[str, Any], world: World) -> Iterator[LiveServer]:
    """Waitress serving the world's database, with the core and the UI."""
    with LiveServer(web_settings, threads=4, plugins=WEB_PLUGINS) as server:
        yield server


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The system Chromium, headless, its home (crash reports, dconf) in a directory of the
    test's."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the core's test extra)")
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        home = tmp_path_factory.mktemp("chromium-home")
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=ARGS,
            env={**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                 "XDG_CACHE_HOME": str(home / ".cache")})
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    target = os.environ.get("MODELREG_UI_SCREENSHOTS")
    directory = Path(target) if target else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _context(chromium: Any, **options: Any) -> Any:
    context = chromium.new_context(accept_downloads=True, **options)
    context.set_default_timeout(15000)
    return context


def _sign_in(page: Any, live: LiveServer, token: str) -> None:
    page.goto(live.url + "/ui/signin")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live.url + "/")


def _wait_until(page: Any, expression: str, timeout: float = 15.0) -> None:
    """Poll ``expression`` from here (``wait_for_function`` would ``eval`` in the page,
    which the page's CSP refuses, as it should)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def _no_script_ran(page: Any) -> None:
    assert page.evaluate("window.__pwned === undefined"), "a stored script ran"


def test_reader_flow(chromium: Any, live: LiveServer, world: World, shots: Path) -> None:
    context = _context(chromium, viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(live.url + "/ui/signin")
    page.screenshot(path=str(shots / "signin.png"), full_page=True)
    _sign_in(page, live, world.tokens["bob"])
    assert "Signed in as" in page.inner_text("header")
    assert page.locator("text=secret-model").count() == 0
    page.screenshot(path=str(shots / "models.png"), full_page=True)
    _no_script_ran(page)
    # search, then a filter error shown inline
    page.get_by_label("Search names and descriptions").fill("fraud")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ui/models?q=fraud*")
    assert page.locator("ul.models > li").count() == 1
    page.get_by_label("Filter").fill("name = ")
    page.get_by_role("button", name="Search").click()
    assert page.locator("#filter-error").inner_text().strip()
    page.screenshot(path=str(shots / "filter-error.png"), full_page=True)
    # a model and its card
    page.goto(live.url + "/ui/models")
    page.get_by_role("link", name="fraud-detector").click()
    card = page.locator("article.markdown")
    assert card.locator("h1").inner_text() == "Fraud detector"
    assert card.locator("table").count() == 1
    # the SVG the card shows is an image: its script cannot run
    _wait_until(page, "document.querySelector('article img[alt=diagram]').naturalWidth == 10")
    page.screenshot(path=str(shots / "model.png"), full_page=True)
    _no_script_ran(page)
    # a version, a download
    page.get_by_role("link", name="v2").first.click()
    page.wait_for_url("**/versions/2")
    assert "fraud-detector@sha256:" in page.input_value("#ref")
    page.screenshot(path=str(shots / "version.png"), full_page=True)
    _no_script_ran(page)
    with page.expect_download() as info:
        page.get_by_role("link", name="config.json").click()
    download = info.value
    assert Path(download.path()).read_bytes() == b'{"layers": 2}'
    # compare
    page.goto(live.url + "/ui/models/fraud-detector/compare?a=1&b=2")
    assert "metadata.metrics.auc" in page.inner_text("main")
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    # a model the reader may not see does not exist
    response = page.goto(live.url + "/ui/models/secret-model")
    assert response.status == 404 and "Not found" in page.inner_text("h1")
    # the file the card links to, opened directly: an attachment, never a page
    svg = page.request.get(live.url + "/ui/models/fraud-detector/versions/2/files/"
                           "docs/diagram.svg")
    assert svg.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in svg.headers["content-security-policy"]
    assert not [e for e in errors if "Content Security Policy" in e], errors
    # narrow screens: nothing scrolls sideways
    small = context.new_page()
    small.set_viewport_size({"width": 375, "height": 800})
    for path in PAGES:
        small.goto(live.url + path)
        assert small.evaluate("document.documentElement.scrollWidth <= 375"), path
        if path == "/ui/models/fraud-detector":
            small.screenshot(path=str(shots / "model-375.png"), full_page=True)
    context.close()


def test_writer_moves_an_alias_and_csrf_is_required(chromium: Any, live: LiveServer,
                                                     world: World, shots: Path) -> None:
    context = _context(chromium, viewport={"width": 1440, "height": 1000},
                       color_scheme="dark")
    page = context.new_page()
    _sign_in(page, live, world.tokens["alice"])
    page.goto(live.url + "/ui/models/fraud-detector")
    page.get_by_label("Alias", exact=True).fill("staging")
    page.get_by_label("To version").select_option("2")
    page.get_by_role("button", name="Move").click()
    page.wait_for_url("**/ui/models/fraud-detector#aliases")
    assert "@staging" in page.inner_text("ol.history")
    page.screenshot(path=str(shots / "model-dark.png"), full_page=True)
    _no_script_ran(page)
    # the same form without its CSRF token is refused
    page.evaluate("document.querySelector('#alias-form input[name=csrf_token]').remove()")
    page.get_by_label("Alias", exact=True).fill("refused")
    page.get_by_role("button", name="Move").click()
    page.wait_for_selector("text=CSRF token is missing")
    page.goto(live.url + "/ui/tokens")
    page.screenshot(path=str(shots / "tokens.png"), full_page=True)
    context.close()


def test_admin_pages(chromium: Any, live: LiveServer, world: World, shots: Path) -> None:
    context = _context(chromium, viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    _sign_in(page, live, world.tokens["root"])
    page.goto(live.url + "/ui/admin")
    assert "alice" in page.inner_text("main")
    page.screenshot(path=str(shots / "admin.png"), full_page=True)
    page.goto(live.url + "/ui/admin/audit")
    page.screenshot(path=str(shots / "audit.png"), full_page=True)
    # JavaScript off: browsing and reading still work
    plain_context = _context(chromium, java_script_enabled=False)
    plain = plain_context.new_page()
    _sign_in(plain, live, world.tokens["bob"])
    plain.get_by_label("Search names and descriptions").fill("fraud")
    plain.get_by_role("button", name="Search").click()
    plain.get_by_role("link", name="fraud-detector").click()
    assert plain.locator("article.markdown h1").inner_text() == "Fraud detector"
    plain.get_by_role("link", name="v1").first.click()
    with plain.expect_download() as info:
        plain.get_by_role("link", name="config.json").click()
    assert Path(info.value.path()).read_bytes() == b'{"layers": 1}'
    plain_context.close()
    context.close()


PAGES = ("/ui/signin", "/", "/ui/models?filter=name%20%3D", "/ui/models/fraud-detector",
         "/ui/models/fraud-detector/versions/2", "/ui/models/fraud-detector/compare?a=1&b=2",
         "/ui/tokens", "/ui/admin", "/ui/admin/audit")


def _axe_source() -> Path:
    """axe-core's ``axe.min.js``, as the PyPI package axe-playwright-python ships it."""
    try:
        import axe_playwright_python
    except ImportError:
        unavailable("axe-playwright-python is not installed (the core's test extra)")
    return Path(axe_playwright_python.__file__).parent / "axe.min.js"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations(chromium: Any, live: LiveServer, world: World,
                                             scheme: str) -> None:
    axe = _axe_source()
    context = _context(chromium, viewport={"width": 1280, "height": 900},
                       color_scheme=scheme)
    page = context.new_page()
    # served from the registry's own origin (intercepted here), so the page's CSP allows it
    page.route(live.url + "/ui/static/axe.min.js",
               lambda route: route.fulfill(path=str(axe), content_type="text/javascript"))
    _sign_in(page, live, world.tokens["root"])
    problems = []
    for path in PAGES:
        page.goto(live.url + path)
        page.add_script_tag(url=live.url + "/ui/static/axe.min.js")
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        for violation in result["violations"]:
            if violation["impact"] in ("serious", "critical"):
                nodes = [n["html"][:120] for n in violation["nodes"][:3]]
                problems.append(f"{path}: {violation['id']} ({violation['impact']}) {nodes}")
    context.close()
    assert problems == []
