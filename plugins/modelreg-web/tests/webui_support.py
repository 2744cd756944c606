"""What the web UI's tests share: a world of principals, tokens, grants and models made
through the real CLI and REST API, and WebTest browsers signed in with a token."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webtest

from modelreg.testing import CORE_PLUGINS

MODELREG = str(Path(sys.executable).parent / "modelreg")
API = "/api/v1"
#: Stored through every field a user can write; must never run in a page.
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
README = f"""# Fraud detector

Catches fraud. {XSS}

<a href="javascript:window.__pwned=3">click</a> and <b onclick="window.__pwned=4">bold</b>

![diagram](docs/diagram.svg) and [the config](config.json).

| metric | value |
|--------|-------|
| auc    | 0.91  |
"""
SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script>window.__pwned=5</script><rect width="10" height="10"/></svg>')
WEB_PLUGINS = (*CORE_PLUGINS, "modelreg_web.plugin")


def run_cli(*args: str) -> str:
    """Run the ``modelreg`` command; its output."""
    result = subprocess.run([MODELREG, *args], capture_output=True, text=True,  # noqa: S603
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@dataclass
class World:
    """Who is who, and what exists."""

    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, who: str) -> webtest.TestApp:
        """A REST client acting with ``who``'s token."""
        return webtest.TestApp(self.app, extra_environ={
            "HTTP_AUTHORIZATION": f"Bearer {self.tokens[who]}", "REMOTE_ADDR": "127.0.0.1"})

    def browser(self, who: str | None = None, **environ: str) -> webtest.TestApp:
        """A cookie-keeping browser, signed in as ``who`` through the sign-in form."""
        browser = webtest.TestApp(self.app, extra_environ={"REMOTE_ADDR": "127.0.0.1",
                                                           **environ})
        if who is not None:
            page = browser.get("/ui/signin", headers={"Accept": "text/html"})
            form = page.forms[0]
            form["token"] = self.tokens[who]
            assert form.submit().status_int == 303
        return browser


def make_world(app: Any, settings: dict[str, Any], directory: Path) -> World:
    """root (admin), alice (write on fraud-*), bob (read on fraud-*); models
    ``fraud-detector`` (two ready versions, a hostile README) and ``secret-model``."""
    ini = directory / "web.ini"
    ini.write_text("[app:main]\nuse = egg:modelreg\n" + "".join(
        f"{k} = {str(v).replace('%', '%%')}\n" for k, v in settings.items()))
    run_cli("users", "add", "root", str(ini), "--admin")
    out = run_cli("tokens", "create", "root", str(ini), "--scope", "admin")
    world = World(app, {"root": re.search(r"mr_\S+", out).group(0)})
    root = world.api("root")
    for name, level in (("alice", "write"), ("bob", "read")):
        root.post_json(f"{API}/admin/principals", {"name": name})
        root.post_json(f"{API}/admin/grants", {"principal": name, "pattern": "fraud-*",
                                               "level": level})
        world.tokens[name] = root.post_json(f"{API}/admin/tokens", {
            "principal": name, "scopes": [level]}).json["token"]
    world.tokens["bob2"] = root.post_json(f"{API}/admin/tokens", {
        "principal": "bob", "scopes": ["read"]}).json["token"]
    root.post_json(f"{API}/models", {"name": "fraud-detector", "description": f"Fraud {XSS}",
                                     "tags": {"team": f"risk {XSS}"}})
    for number, auc in ((1, 0.88), (2, 0.91)):
        base = f"{API}/models/fraud-detector/versions"
        root.post_json(base, {"description": f"v{number} {XSS}",
                              "metadata": {"metrics": {"auc": auc}, "note": XSS},
                              "lineage": {"run_id": f"run-{number}",
                                          "parent_version": number - 1 or None}})
        files = {"README.md": README.encode(), "config.json": b'{"layers": %d}' % number,
                 "docs/diagram.svg": SVG, f"weights/it's&amp;{number}.bin": b"\0" * (number * 100)}
        for path, body in files.items():
            kind = "image/svg+xml" if path.endswith(".svg") else "application/octet-stream"
            root.put(f"{base}/{number}/files/{path}", body, content_type=kind)
        assert root.post(f"{base}/{number}/finalize").json["status"] == "ready"
    root.put_json(f"{API}/models/fraud-detector/aliases/champion", {"version": 1})
    root.post_json(f"{API}/models", {"name": "secret-model", "description": "hidden"})
    return world


