"""The largest request body: one figure (``modelreg.limits``) that the app's limits and
Waitress's ``max_request_body_size`` agree on, in the shipped ini files and in a real
Waitress."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from pathlib import Path

import plaster
import pytest

from helpers import API
from live_helpers import LiveClient
from modelreg.limits import (
    body_limits,
    check_server_body_limit,
    ini_server_body_limit,
    largest_request_body,
    server_body_limit,
)
from modelreg.testing.server import LiveServer

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024


@pytest.mark.parametrize("ini", ["production.ini", "development.ini"])
def test_the_shipped_ini_files_agree_on_the_largest_body(ini):
    settings = dict(plaster.get_settings(str(ROOT / ini), "app:main"))
    server = dict(plaster.get_settings(str(ROOT / ini), "server:main"))
    assert int(server["max_request_body_size"]) == server_body_limit(settings), ini
    assert server_body_limit(settings) == largest_request_body(settings) + 1
    assert ini_server_body_limit(ROOT / ini) == server_body_limit(settings)
    assert check_server_body_limit(settings, {"__file__": str(ROOT / ini)}) is None
    assert set(body_limits(settings)) == {"modelreg.api.max_json_body",
                                          "modelreg.upload.max_put_size"}


def test_start_up_warns_when_waitress_and_the_app_disagree(tmp_path, caplog):
    ini = tmp_path / "app.ini"
    ini.write_text("[server:main]\nuse = egg:waitress#main\nmax_request_body_size = 1000\n")
    with caplog.at_level(logging.WARNING, logger="modelreg.limits"):
        message = check_server_body_limit({"modelreg.upload.max_put_size": "2048"},
                                          {"__file__": str(ini)})
    assert message is not None and "set max_request_body_size = 1048577" in message
    assert message in caplog.text
    ini.write_text("[server:main]\nuse = egg:waitress#main\n")  # Waitress's default: 1 GiB
    assert check_server_body_limit({}, {"__file__": str(ini)}) is not None


def test_waitress_takes_the_largest_part_and_refuses_one_byte_more_unread(
        modelreg_settings, modelreg_database):
    """With the limits computed here, a part of exactly max_put_size reaches the app and is
    stored; a declared body one byte larger is refused by Waitress before it is sent."""
    if modelreg_database.backend != "sqlite":
        pytest.skip("a test of Waitress: one database is enough")
    settings = {key: str(value) for key, value in modelreg_settings.items()
                if isinstance(value, str | int | float | bool)}
    settings.update({"modelreg.upload.max_put_size": str(1024 * KiB),
                     "modelreg.upload.min_chunk_size": str(64 * KiB)})
    largest = largest_request_body(settings)
    assert largest == 1024 * KiB
    with LiveServer(settings, server_settings={
            "max_request_body_size": server_body_limit(settings)}) as server:
        client = LiveClient(server)
        try:
            client.json("POST", f"{API}/models", {"name": "limits"}, status=201)
            number = client.json("POST", f"{API}/models/limits/versions", {},
                                 status=201)["number"]
            session = client.json("POST", f"{API}/models/limits/versions/{number}/uploads",
                                  {"path": "m.bin", "size": largest + 1,
                                   "part_size": largest}, status=201)
            data = b"p" * largest
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            part = client.json("PUT", f"{session['location']}/parts/1", raw=data,
                               headers={"Content-Digest": f"sha-256=:{digest}:"}, status=201)
            assert part["size"] == largest
        finally:
            client.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                f"PUT {session['location']}/parts/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Content-Length: {largest + 1}\r\n\r\n".encode())
            answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 413"), answer
