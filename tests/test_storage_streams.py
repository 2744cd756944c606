"""The core relies on no stream property the blob-store interface does not state.

A backend whose ``file_path()`` returns a path and whose ``open()`` stream only reads (no
``seek``/``tell``) passes the contract suite's server-stream case and serves downloads
through a real Waitress (``unseekable_store``); before, Waitress's file wrapper called
``tell()`` on it and every download answered 500.
"""

from __future__ import annotations

import hashlib
import urllib.request

import pytest

from modelreg.testing import clear_database, make_app
from modelreg.testing.contracts import BlobStoreContract
from modelreg.testing.server import LiveServer
from unseekable_store import UnseekableStore

PLUGINS = ("modelreg.validation.builtin", "unseekable_store")
DATA = bytes(range(256)) * 5000  # 1,280,000 bytes: more than one send block


@pytest.mark.parametrize("server", ["waitress", "iteration"])
def test_the_contract_case_passes_for_a_stream_that_only_reads(tmp_path, server):
    BlobStoreContract().test_open_streams_as_servers_send_them(UnseekableStore(tmp_path),
                                                               server)


def get(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=30) as response:
        return response.status, response.read()


def test_downloads_from_a_store_whose_streams_only_read_through_waitress(
        modelreg_settings, modelreg_database, tmp_path):
    settings = {**{k: str(v) for k, v in modelreg_settings.items()},
                "modelreg.storage": "unseekable",
                "modelreg.storage.local.path": str(tmp_path)}
    app = make_app(settings, PLUGINS)
    try:
        with LiveServer(settings, threads=2, plugins=PLUGINS) as server:
            api = server.url + "/api/v1"
            for url, body in ((f"{api}/models", b'{"name": "m"}'),
                              (f"{api}/models/m/versions", b"{}")):
                request = urllib.request.Request(url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=30).close()
            digest = hashlib.sha256(DATA).hexdigest()
            request = urllib.request.Request(
                f"{api}/models/m/versions/1/files/w.bin?digest=sha256:{digest}", data=DATA,
                method="PUT", headers={"Content-Type": "application/octet-stream"})
            urllib.request.urlopen(request, timeout=30).close()
            url = f"{api}/models/m/versions/1/files/w.bin"
            assert get(url) == (200, DATA)
            assert get(url, {"Range": "bytes=1000-299999"}) == (206, DATA[1000:300000])
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


def test_help_on_the_interface_shows_its_methods_with_keyword_only_parameters():
    import pydoc

    from modelreg.api import IBlobStore

    text = pydoc.render_doc(IBlobStore, renderer=pydoc.plaintext)
    assert "put(stream, *, expected_sha256=None, max_size=None)" in text
    assert ("upload_part(state, *, number, stream, length, expected_sha256=None, "
            "offset=None)") in text
    assert "open(sha256, start=0, end=None)" in text
