"""Direct uploads: the parts of a push go straight to S3 at presigned URLs (issue 18, item 5).

A Waitress process (``pserve`` on an ini, the embedded worker running) on PostgreSQL and
moto's S3 server, with ``modelreg.storage.s3.presigned_uploads = true``, driven by the real
client and by plain HTTP:

* ``modelreg push`` of a file in three parts: the session says ``direct``, the bytes go to
  S3 (the app's ``modelreg_transfer_bytes_total{direction="upload"}`` stays 0, and its part
  endpoint is never called), the completion answers ``202 verifying`` and the version is
  ready once the worker has read the object and checked its sha256; the pull gives the
  bytes back;
* a completion with the wrong digest: ``202``, then the worker refuses it; the session says
  ``refused`` with ``digest_mismatch`` (expected, actual), nothing is stored under either
  digest and the draft has no file;
* a part of another length than the one its URL is signed for: moto accepts any body
  (it checks no signature), so the completion refuses it (``422 part_size_mismatch``), and
  once the part is sent again with its length the upload succeeds;
* the size rules refuse a session too large for the version at opening, before any byte;
* a session through the app's ``PUT …/parts/{n}`` is ``409 upload_mode`` on a direct one.

PostgreSQL is required (unreachable: skipped, or failed when ``CI=true``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest

from modelreg.testing import TestDatabase, add_principal, make_app, unavailable
from modelreg.testing.server import LiveServer
from modelreg_client import Client

pytestmark = pytest.mark.server

API = "/api/v1"
MiB = 1024 * 1024
PART = 8 * MiB
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def database() -> Iterator[TestDatabase]:
    wanted = os.environ.get("MODELREG_TEST_BACKENDS")
    if wanted and "postgresql" not in {name.strip() for name in wanted.split(",")}:
        pytest.skip("PostgreSQL is not among MODELREG_TEST_BACKENDS")
    try:
        db = TestDatabase.create("postgresql", installed=True)
    except ConnectionError as exc:
        unavailable(str(exc))
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="module")
def settings(database: TestDatabase, modelreg_s3_server: Any) -> dict[str, str]:
    return {
        "sqlalchemy.url": database.url,
        **modelreg_s3_server.settings(),
        "modelreg.storage.s3.presigned_uploads": "true",
        "modelreg.storage.s3.addressing_style": "path",
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
        "modelreg.metrics.enabled": "true",
        "modelreg.metrics.public": "true",
        "modelreg.upload.max_put_size": str(PART),
        "modelreg.policy.max_version_size": str(40 * MiB),
    }


@pytest.fixture(scope="module")
def server(settings: dict[str, str], database: TestDatabase,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    app = make_app({"sqlalchemy.url": database.url,  # only to add the principal
                    "modelreg.storage.local.path": str(tmp_path_factory.mktemp("blobs"))})
    try:
        token = add_principal(app, "pusher", admin=True)
    finally:
        app.registry["db_engine"].dispose()
    with LiveServer(settings, threads=8) as live:
        live.token = token  # type: ignore[attr-defined]
        yield live


def call(server: LiveServer, method: str, path: str, body: Any = None, *,
         raw: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any]]:
    data, sent = raw, {"Accept": "application/json",
                       "Authorization": f"Bearer {server.token}", **(headers or {})}
    if body is not None:
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif raw is not None:
        sent.setdefault("Content-Type", "application/octet-stream")
    request = urllib.request.Request(  # noqa: S310 - the test server
        server.url + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            text = response.read()
            if "json" not in response.headers.get("Content-Type", ""):
                return response.status, {"bytes": text}
            return response.status, json.loads(text) if text else {}
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def ok(server: LiveServer, method: str, path: str, body: Any = None, *,
       status: int | tuple[int, ...] = 200, **kwargs: Any) -> dict[str, Any]:
    code, answer = call(server, method, path, body, **kwargs)
    assert code in ((status,) if isinstance(status, int) else status), (code, answer)
    return answer


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uploaded_bytes(server: LiveServer) -> float:
    """The process's ``modelreg_transfer_bytes_total{direction="upload"}``: file bytes
    that went through the app (a ``PUT`` of a file, a chunk or a part)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r'modelreg_transfer_bytes_total\{(.*)\} (\S+)', line)
        if match and 'direction="upload"' in match.group(1):
            total += float(match.group(2))
    return total


def route_requests(server: LiveServer, route: str) -> dict[str, float]:
    """``modelreg_http_requests_total`` of one route, by method."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:  # noqa: S310
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r'modelreg_http_requests_total\{(.*)\} (\S+)', line)
        if match and f'route="{route}"' in match.group(1):
            method = re.search(r'method="(\w+)"', match.group(1)).group(1)
            found[method] = found.get(method, 0) + float(match.group(2))
    return found


def bucket_keys(settings: dict[str, str], under: str) -> set[str]:
    """The keys under ``<prefix>/<under>`` (moto answers unsigned listings)."""
    prefix = settings["modelreg.storage.s3.prefix"].strip("/") + "/" + under
    query = urllib.parse.urlencode({"list-type": "2", "prefix": prefix})
    url = (f"{settings['modelreg.storage.s3.endpoint_url']}/"
           f"{settings['modelreg.storage.s3.bucket']}?{query}")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
        listing = ElementTree.fromstring(response.read())  # noqa: S314 - the test server
    return {element.text or "" for element in listing.iter()
            if element.tag.endswith("}Key") or element.tag == "Key"}


def put_to_store(signed: dict[str, Any], data: bytes) -> int:
    """Send a part to its presigned URL as a client would: no modelreg credentials."""
    headers = {k: v for k, v in signed["headers"].items() if k.lower() != "content-length"}
    headers["Content-Type"] = "application/octet-stream"
    request = urllib.request.Request(  # noqa: S310 - the test server
        signed["url"], data=data, method=signed["method"], headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def wait_for(server: LiveServer, session: str, status: str) -> dict[str, Any]:
    """The session once it left ``verifying`` (``{}`` once gone, i.e. concluded)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        code, answer = call(server, "GET", session)
        if code == 404:
            assert status == "gone", answer
            return {}
        assert code == 200, answer
        if answer["status"] != "verifying" or time.monotonic() > deadline:
            assert answer["status"] == status, answer
            return answer
        time.sleep(0.1)


def draft(server: LiveServer, model: str) -> str:
    ok(server, "POST", f"{API}/models", {"name": model}, status=201)
    number = ok(server, "POST", f"{API}/models/{model}/versions", {}, status=201)["number"]
    return f"{API}/models/{model}/versions/{number}"


def open_direct(server: LiveServer, base: str, size: int) -> dict[str, Any]:
    """Open a session in parts, offering to send them to presigned URLs, as the client does."""
    return ok(server, "POST", f"{base}/uploads",
              {"path": "w.bin", "size": size, "part_size": PART, "direct": True}, status=201)


def send_parts(server: LiveServer, session: dict[str, Any], content: bytes,
               lengths: dict[int, int] | None = None) -> None:
    """Send every part to its presigned URL (part ``n`` with ``lengths[n]`` bytes if given)."""
    for number in range(1, session["parts_count"] + 1):
        start = (number - 1) * session["part_size"]
        part = content[start:start + session["part_size"]]
        signed = ok(server, "POST", f"{session['location']}/parts/{number}/url",
                    {"digest": f"sha256:{sha256(part)}"})
        assert (signed["number"], signed["start"], signed["size"]) == (
            number, start, len(part))
        assert signed["method"] == "PUT"
        assert signed["headers"]["Content-Length"] == str(len(part))
        assert "X-Amz-Signature=" in signed["url"] and "content-length" in signed["url"]
        if lengths and number in lengths:
            part = (part * 2)[:lengths[number]]
        assert put_to_store(signed, part) == 200, "moto checks no signature"


# ------------------------------------------------------------------------------ tests


def test_a_push_sends_its_parts_straight_to_s3_and_is_ready_once_verified(
        server, settings, tmp_path):
    content = os.urandom(2 * PART + 12345)
    source = tmp_path / "push"
    source.mkdir()
    (source / "model.bin").write_bytes(content)
    (source / "config.json").write_bytes(b'{"layers": 2}\n')
    before = uploaded_bytes(server)
    assert route_requests(server, "api.upload_part_url") == {}
    with Client(server.url, server.token, timeout=60, state_dir=tmp_path / "state",
                cache_dir=tmp_path / "cache") as client:
        pushed = client.push(source, "direct")
        assert pushed.version.number == 1
        assert sorted(pushed.uploaded_files) == ["config.json", "model.bin"]
        version = client.get_version("direct", 1)
        assert version.status == "ready"
        files = {f.path: f for f in client.list_files("direct", 1).files}
        assert files["model.bin"].sha256 == sha256(content)
        assert files["model.bin"].size == len(content)
        pulled = client.pull("direct/1", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "model.bin").read_bytes() == content
    assert sorted(pulled.downloaded_files) == ["config.json", "model.bin"]
    # Only the small file went through the app (one PUT); the 3 parts went to S3.
    assert uploaded_bytes(server) - before == len(b'{"layers": 2}\n')
    # The app's part endpoint was never called; it signed one URL per part.
    assert route_requests(server, "api.upload_part") == {}
    assert route_requests(server, "api.upload_part_url") == {"POST": 3}
    key = f"sha256/{sha256(content)[:2]}/{sha256(content)[2:4]}/{sha256(content)}"
    assert any(k.endswith(key) for k in bucket_keys(settings, "sha256/"))
    assert bucket_keys(settings, "tmp/") == set()  # the assembled object was promoted


def test_a_file_sent_while_it_is_hashed_goes_straight_to_s3_too(server, settings, tmp_path):
    """With parts of 8 MiB the file is large enough to go while the client hashes it (a new
    model: no version to repeat): its parts still go to S3, and the completion waits for
    the whole file's digest."""
    content = os.urandom(2 * PART + 777)
    source = tmp_path / "push"
    source.mkdir()
    (source / "model.bin").write_bytes(content)
    signed = route_requests(server, "api.upload_part_url").get("POST", 0)
    through = route_requests(server, "api.upload_part")
    with Client(server.url, server.token, timeout=60, chunk_size=PART,
                state_dir=tmp_path / "state", cache_dir=tmp_path / "cache") as client:
        pushed = client.push(source, "direct-while-hashed")
        assert pushed.uploaded_files == ["model.bin"] and pushed.version.status == "ready"
        assert pushed.version.digest == pushed.digest
        client.pull("direct-while-hashed/1", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "model.bin").read_bytes() == content
    assert route_requests(server, "api.upload_part_url").get("POST", 0) - signed == 3
    assert route_requests(server, "api.upload_part") == through


def test_the_session_of_a_direct_upload_and_its_completion(server, settings):
    base = draft(server, "steps")
    content = os.urandom(PART + 777)
    session = open_direct(server, base, len(content))
    assert (session["direct"], session["status"], session["parts_count"]) == (True, "open", 2)
    where = session["location"]
    # The app's own part endpoint refuses the bytes of a direct session.
    code, answer = call(server, "PUT", f"{where}/parts/1", raw=content[:PART],
                        headers={"Content-Digest": "sha-256=:AAAA:"})
    assert (code, answer["error"]["code"]) == (409, "upload_mode")
    # Part numbers outside the file: 416.
    code, answer = call(server, "POST", f"{where}/parts/3/url",
                        {"digest": f"sha256:{sha256(b'')}"})
    assert (code, answer["error"]["code"]) == (416, "part_out_of_range")
    # Completing before every part is there: 422, the session stays open.
    code, answer = call(server, "PUT", f"{where}?digest=sha256:{sha256(content)}", raw=b"")
    assert (code, answer["error"]["code"]) == (422, "upload_incomplete")
    assert answer["error"]["details"]["missing"] == [1, 2]
    send_parts(server, session, content)
    held = ok(server, "GET", where)
    assert [(p["number"], p["size"]) for p in held["parts"]] == [(1, PART), (2, 777)]
    done = ok(server, "PUT", f"{where}?digest=sha256:{sha256(content)}", raw=b"", status=202)
    assert done["status"] == "verifying"
    # Completing again (a retry after a lost answer) answers the same, or 404 once the
    # worker has concluded; another digest is refused.
    code, again = call(server, "PUT", f"{where}?digest=sha256:{sha256(content)}", raw=b"")
    assert (code, again.get("status")) in ((202, "verifying"), (404, None)), again
    code, other = call(server, "PUT", f"{where}?digest=sha256:{sha256(b'x')}", raw=b"")
    assert code in (400, 404), other
    assert wait_for(server, where, "gone") == {}
    files = ok(server, "GET", f"{base}/files")["files"]
    assert [(f["path"], f["sha256"], f["size"]) for f in files] == [
        ("w.bin", sha256(content), len(content))]
    code, got = call(server, "GET", f"{base}/files/w.bin")
    assert (code, got["bytes"]) == (200, content)


def test_a_wrong_digest_is_refused_by_the_worker_and_nothing_is_kept(server, settings):
    base = draft(server, "wrong")
    content = os.urandom(PART + 10)
    claimed = sha256(b"something else")
    session = open_direct(server, base, len(content))
    send_parts(server, session, content)
    answer = ok(server, "PUT", f"{session['location']}?digest=sha256:{claimed}", raw=b"",
                status=202)
    assert answer["status"] == "verifying"
    # Meanwhile the draft has no file: unverified bytes are never served.
    code, _ = call(server, "GET", f"{base}/files/w.bin")
    assert code == 404
    refused = wait_for(server, session["location"], "refused")
    assert refused["error"]["code"] == "digest_mismatch"
    assert refused["error"]["details"] == {"expected": f"sha256:{claimed}",
                                           "actual": f"sha256:{sha256(content)}"}
    assert ok(server, "GET", f"{base}/files")["files"] == []
    events = ok(server, "GET", f"{API}/audit?action=upload.refused&model=wrong")["events"]
    assert [(e["actor"], e["target"], e["after"]["code"]) for e in events] == [
        ("pusher", "wrong/1:w.bin", "digest_mismatch")]
    stored = bucket_keys(settings, "sha256/")
    assert not any(k.endswith(claimed) or k.endswith(sha256(content)) for k in stored)
    assert bucket_keys(settings, "tmp/") == set()
    # Completing again says why, and the client's abort frees the session.
    code, again = call(server, "PUT", f"{session['location']}?digest=sha256:{claimed}",
                       raw=b"")
    assert (code, again["error"]["code"]) == (422, "upload_refused")
    assert again["error"]["details"]["error"]["code"] == "digest_mismatch"
    code, _ = call(server, "DELETE", session["location"])
    assert code == 204


def test_the_real_client_reports_a_refused_upload(server, tmp_path):
    """The client's view of a refusal: an IntegrityError naming the server's reason."""
    from modelreg_client.errors import IntegrityError

    base = draft(server, "client-refused")
    content = os.urandom(PART + 5)
    with Client(server.url, server.token, timeout=60, state_dir=tmp_path / "s") as client:
        session = client.open_upload("client-refused", 1, "x.bin", size=len(content),
                                     part_size=PART, direct=True)
        assert session.direct
        for number in (1, 2):
            part = content[(number - 1) * PART:number * PART]
            client.send_to_store(client.part_url(session.id, number, sha256(part)), part)
        upload = client.complete_direct_upload(session.id, sha256(b"not it"))
        assert upload.status == "verifying"
        with pytest.raises(IntegrityError) as caught:
            client.wait_verified(upload)
    assert caught.value.code == "digest_mismatch"
    assert "does not match" in str(caught.value)
    assert ok(server, "GET", f"{base}/files")["files"] == []


def test_a_part_of_another_length_than_signed_is_refused(server, settings):
    base = draft(server, "lengths")
    content = os.urandom(PART + 100)
    session = open_direct(server, base, len(content))
    where = session["location"]
    # Part 2 is signed for 100 bytes; a body of 200 bytes is sent to its URL.  S3 refuses a
    # body whose length differs from the signed Content-Length (403 SignatureDoesNotMatch);
    # moto checks no signature and keeps it: the completion, which compares each part's
    # size as S3 lists it with the size it must have, refuses it then.
    signed = ok(server, "POST", f"{where}/parts/2/url",
                {"digest": f"sha256:{sha256(content[PART:])}"})
    assert signed["headers"]["Content-Length"] == "100"
    send_parts(server, session, content, lengths={2: 200})
    code, answer = call(server, "PUT", f"{where}?digest=sha256:{sha256(content)}", raw=b"")
    assert (code, answer["error"]["code"]) == (422, "part_size_mismatch"), answer
    assert answer["error"]["details"] == {"number": 2, "size": 200, "expected_size": 100}
    assert ok(server, "GET", where)["status"] == "open"
    assert put_to_store(signed, content[PART:]) == 200  # sent again, as signed
    ok(server, "PUT", f"{where}?digest=sha256:{sha256(content)}", raw=b"", status=202)
    wait_for(server, where, "gone")
    files = ok(server, "GET", f"{base}/files")["files"]
    assert [(f["sha256"], f["size"]) for f in files] == [(sha256(content), len(content))]


def test_a_session_is_direct_only_for_a_client_that_asks(server):
    """curl, or a client before direct uploads, keeps sending its parts through the app."""
    base = draft(server, "plain")
    content = os.urandom(PART + 1)
    session = ok(server, "POST", f"{base}/uploads",
                 {"path": "p.bin", "size": len(content), "part_size": PART}, status=201)
    assert session["direct"] is False
    for number, part in ((1, content[:PART]), (2, content[PART:])):
        ok(server, "PUT", f"{session['location']}/parts/{number}", raw=part, status=201,
           headers={"Content-Digest": "sha-256=:" + base64.b64encode(
               hashlib.sha256(part).digest()).decode() + ":"})
    done = ok(server, "PUT", f"{session['location']}?digest=sha256:{sha256(content)}",
              raw=b"", status=201)
    assert (done["sha256"], done["size"]) == (sha256(content), len(content))


def test_the_size_rules_refuse_a_direct_upload_at_opening(server, settings):
    base = draft(server, "too-large")
    code, answer = call(server, "POST", f"{base}/uploads",
                        {"path": "big.bin", "size": 41 * MiB, "part_size": PART,
                         "direct": True})
    assert (code, answer["error"]["code"]) == (422, "validation_failed"), answer
    problems = {p["code"] for p in answer["error"]["details"]["problems"]}
    assert "version_too_large" in problems
    # No URL is ever signed for it: there is no session.
    assert ok(server, "GET", f"{base}/files")["files"] == []
