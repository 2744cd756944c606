"""Other plugins add to the UI's pages through ``modelreg_web_sections``: the scan plugin
shows a version's findings, the webhooks plugin the latest deliveries to global admins."""

from __future__ import annotations

import json
import pickle
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from webui_support import API, WEB_PLUGINS, XSS, run_cli

from modelreg.testing import TestDatabase, make_app, run_worker, unavailable

PLUGINS = (*WEB_PLUGINS, "modelreg_scan.plugin", "modelreg_webhooks.plugin")
HTML = {"Accept": "text/html"}


class Exploit:
    """Pickles to a call of ``os.system``: what the scanner must flag."""

    def __reduce__(self) -> tuple[Any, ...]:
        import os
        return (os.system, (f"echo {XSS}",))


@pytest.fixture(scope="module")
def app_and_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    try:
        db = TestDatabase.create("sqlite", PLUGINS)
    except ConnectionError as exc:
        unavailable(str(exc))
    settings = {"sqlalchemy.url": db.url, "modelreg.auth.anonymous": "none",
                "modelreg.webhooks.allow_private": "true",
                "modelreg.storage.local.path": str(tmp_path_factory.mktemp("blobs"))}
    ini = Path(tmp_path_factory.mktemp("ini")) / "web.ini"
    ini.write_text("[app:main]\nuse = egg:modelreg\n"
                   + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    run_cli("users", "add", "root", str(ini), "--admin")
    token = re.search(r"mr_\S+", run_cli("tokens", "create", "root", str(ini), "--scope",
                                         "admin")).group(0)
    app = make_app(settings, PLUGINS)
    yield app, token
    app.registry["db_engine"].dispose()
    db.drop()


def test_scan_findings_on_the_version_page_and_deliveries_for_admins(app_and_token) -> None:
    app, token = app_and_token
    api = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {token}"})
    api.post_json(f"{API}/webhooks", {"url": "http://127.0.0.1:9/hook",
                                      "secret": "s" * 32, "events": ["*"]})
    api.post_json(f"{API}/models", {"name": "picky"})
    api.post_json(f"{API}/models/picky/versions", {})
    api.put(f"{API}/models/picky/versions/1/files/model.pkl", pickle.dumps(Exploit()))
    header = json.dumps({"__metadata__": {"format": "pt", "note": XSS},
                         "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    api.put(f"{API}/models/picky/versions/1/files/model.safetensors",
            struct.pack("<Q", len(header)) + header + b"\0" * 8)
    api.post(f"{API}/models/picky/versions/1/finalize")
    run_worker(app)
    browser = webtest.TestApp(app)
    form = browser.get("/ui/signin", headers=HTML).forms[0]
    form["token"] = token
    form.submit(status=303)
    page = browser.get("/ui/models/picky/versions/1", headers=HTML)
    section = page.html.find("h2", string=re.compile("Scan findings"))
    assert section is not None, page.text
    findings = section.find_parent("section").text
    assert "model.pkl" in findings and "system" in findings
    # what the safetensors scanner extracted: dtypes and the header's metadata
    assert "1 F32" in findings and "metadata.format" in findings
    assert "<script>window" not in page.text
    admin = browser.get("/ui/admin", headers=HTML)
    assert admin.html.find("h2", string=re.compile("Webhook deliveries")) is not None
