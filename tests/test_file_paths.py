"""File paths every client can write: the rules for new files, and old paths kept readable.

A new file's path must be writable on Linux, macOS and Windows alike
(:func:`modelreg.files.paths.check_new_path`), and must not clash with the version's other
files (:func:`modelreg.files.paths.conflict`): through ``PUT``, upload sessions (opening and
completing) and links by digest, each refusal is ``422 invalid_path`` with the rule in
``details.rule`` and nothing recorded.  Files stored before the rules existed stay listed and
downloadable.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from helpers import API, create_model, create_version, error_code
from modelreg.models import File
from security_helpers import session

M = "paths"
OCTETS = {"Content-Type": "application/octet-stream"}
DATA = b"some bytes"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()

#: (path, the rule it breaks).
NEW_PATH_CASES = [
    ("a/" + "\u00e9" * 128, "segment_too_long"),  # 128 characters, 256 bytes
    ("\u540d" * 86, "segment_too_long"),  # 258 bytes
    ("invoice\u202egpj.exe", "format_character"),  # right-to-left override
    ("a\u2066b\u2069", "format_character"),  # bidi isolates
    ("zero\u200bwidth", "format_character"),
    ("\ufeffbom.bin", "format_character"),
    ("soft\u00adhyphen", "format_character"),
    ("a:b", "reserved_character"),
    ("a*b", "reserved_character"),
    ("what?", "reserved_character"),
    ('say "hi"', "reserved_character"),
    ("a<b", "reserved_character"),
    ("a>b", "reserved_character"),
    ("a|b", "reserved_character"),
    ("con", "reserved_name"),
    ("CON", "reserved_name"),
    ("nul", "reserved_name"),
    ("prn", "reserved_name"),
    ("Aux", "reserved_name"),
    ("com1", "reserved_name"),
    ("COM9", "reserved_name"),
    ("lpt1", "reserved_name"),
    ("lpt9", "reserved_name"),
    ("con.txt", "reserved_name"),
    ("dir/nul.tar.gz", "reserved_name"),
    ("com\u00b9", "reserved_name"),
    ("nul/x", "reserved_name"),
    ("a.", "trailing_dot_or_space"),
    ("...", "trailing_dot_or_space"),
    ("dir./x", "trailing_dot_or_space"),
    ("a ", "trailing_dot_or_space"),
    ("dir /x", "trailing_dot_or_space"),
]
#: Near misses that are fine.
FINE_PATHS = ["console.txt", "com10", "lpt", "nul_", "a.b", "connect/x", "\u00e9" * 127,
              "a b", ".hidden", "dir/.x", "\u540d" * 85]


@pytest.fixture
def draft(testapp) -> int:
    """Model ``paths`` with version 1 (ready, holding ``weights.bin`` = DATA) and draft 2."""
    create_model(testapp, M)
    create_version(testapp, M)
    put(testapp, 1, "weights.bin", status=201)
    testapp.post(f"{API}/models/{M}/versions/1/finalize", status=200)
    return create_version(testapp, M)["number"]


def url(number: int, path: str) -> str:
    return f"{API}/models/{M}/versions/{number}/files/{quote(path, safe='/')}"


def put(app, number: int, path: str, data: bytes = DATA, status: int | None = None):
    return app.put(url(number, path), data, headers=OCTETS, status=status)


def open_upload(app, number: int, path: str, status: int | None = None):
    return app.post_json(f"{API}/models/{M}/versions/{number}/uploads", {"path": path},
                         status=status)


def link(app, number: int, path: str, status: int | None = None):
    return app.post_json(f"{API}/models/{M}/versions/{number}/files",
                         {"path": path, "digest": DIGEST}, status=status)


def file_paths(app, number: int) -> list[str]:
    return [f["path"] for f in app.get(f"{API}/models/{M}/versions/{number}/files").json[
        "files"]]


def refused(response, rule: str) -> dict:
    assert error_code(response) == "invalid_path", response.text
    details = response.json["error"]["details"]
    assert details["rule"] == rule, details
    return details


def test_paths_no_client_can_write_are_refused_everywhere(testapp, draft):
    failures = []
    for path, rule in NEW_PATH_CASES:
        for how, send in (("PUT", put), ("upload", open_upload), ("link", link)):
            response = send(testapp, draft, path, status="*")
            if response.status_int != 422 or error_code(response) != "invalid_path" or (
                    response.json["error"]["details"].get("rule") != rule):
                failures.append(f"{how} {path!r}: {response.status} {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert file_paths(testapp, draft) == []
    assert testapp.get(f"{API}/models/{M}/versions/{draft}").json["status"] == "draft"
    for path in FINE_PATHS:
        put(testapp, draft, path, status=201)
    assert sorted(file_paths(testapp, draft)) == sorted(FINE_PATHS)


@pytest.mark.parametrize("send", [put, link], ids=["put", "link"])
def test_a_file_and_a_folder_of_one_name_are_refused_in_either_order(testapp, draft, send):
    send(testapp, draft, "x", status=201)
    details = refused(send(testapp, draft, "x/y", status=422), "file_folder")
    assert details["conflicts_with"] == "x"
    send(testapp, draft, "a/b/c", status=201)
    for path in ("a", "a/b", "A/b"):
        details = refused(send(testapp, draft, path, status=422),
                          "file_folder" if path != "A/b" else "case_collision")
        assert details["conflicts_with"] == "a/b/c"
    refused(open_upload(testapp, draft, "x/y/z", status=422), "file_folder")
    refused(open_upload(testapp, draft, "a/b", status=422), "file_folder")
    # Replacing a file, and neighbours that share a prefix only as text, are fine.
    send(testapp, draft, "x", status=200)
    for path in ("xy", "x.d/y", "a/bc", "a/b/d"):
        send(testapp, draft, path, status=201)
    assert sorted(file_paths(testapp, draft)) == [
        "a/b/c", "a/b/d", "a/bc", "x", "x.d/y", "xy"]


def test_upload_sessions_completed_into_a_clash_are_refused(testapp, draft):
    """Both sessions open before either completes: the second completion is refused under
    the version's lock, and its session is gone."""
    first = open_upload(testapp, draft, "m", status=201).json["location"]
    second = open_upload(testapp, draft, "m/n", status=201).json["location"]
    testapp.put(f"{first}?digest={DIGEST}", DATA, headers=OCTETS, status=201)
    details = refused(testapp.put(f"{second}?digest={DIGEST}", DATA, headers=OCTETS,
                                  status=422), "file_folder")
    assert details["conflicts_with"] == "m"
    testapp.get(second, status=404)
    assert file_paths(testapp, draft) == ["m"]


def test_names_equal_once_case_folded_or_normalised_are_refused(testapp, draft):
    put(testapp, draft, "Model.bin", status=201)
    put(testapp, draft, "Dir/a", status=201)
    put(testapp, draft, "\u00e9t\u00e9.bin", status=201)  # NFC
    put(testapp, draft, "stra\u00dfe", status=201)
    for path, other in [("model.bin", "Model.bin"), ("MODEL.BIN", "Model.bin"),
                        ("dir/b", "Dir/a"), ("DIR", "Dir/a"),
                        ("\u00c9T\u00c9.bin", "\u00e9t\u00e9.bin"),
                        ("STRASSE", "stra\u00dfe")]:
        for send in (put, open_upload, link):
            details = refused(send(testapp, draft, path, status=422), "case_collision")
            assert details["conflicts_with"] == other
    # The same path in NFD is refused before any comparison: paths are stored in NFC.
    refused(put(testapp, draft, "e\u0301te\u0301.bin", status=422), "not_nfc")
    put(testapp, draft, "Model.bin", b"replaced", status=200)
    assert sorted(file_paths(testapp, draft)) == sorted(
        ["Model.bin", "Dir/a", "\u00e9t\u00e9.bin", "stra\u00dfe"])


#: Paths the rules refuse today, as versions stored earlier may hold them.
LEGACY_PATHS = ["con.txt", "x", "x/y", "Model.bin", "model.bin", "invoice\u202egpj.exe",
                "trailing.", "a:b", "\u00e9" * 128]


def store_legacy_files(app, number: int) -> None:
    """Give version ``number`` files with :data:`LEGACY_PATHS`, written straight to the
    database as an older release could have (the blob is weights.bin's)."""
    with session(app.app) as db:
        version_id = db.scalar(sa.text(
            "SELECT v.id FROM versions v JOIN models m ON m.id = v.model_id "
            "WHERE m.name = :m AND v.number = :n"), {"m": M, "n": number})
        for path in LEGACY_PATHS:
            db.add(File(version_id=version_id, path=path, size=len(DATA),
                        sha256=DIGEST.removeprefix("sha256:"),
                        media_type="application/octet-stream"))


def test_files_stored_before_the_rules_stay_readable(testapp, draft):
    store_legacy_files(testapp, 1)
    assert sorted(file_paths(testapp, 1)) == sorted([*LEGACY_PATHS, "weights.bin"])
    for path in LEGACY_PATHS:
        response = testapp.get(url(1, path), status=200)
        assert response.body == DATA, path
        testapp.head(url(1, path), status=200)
    # A draft holding such files: they can be deleted (and replaced only by a valid path).
    store_legacy_files(testapp, draft)
    for path in LEGACY_PATHS:
        testapp.delete(url(draft, path), status=204)
    assert file_paths(testapp, draft) == []


@pytest.mark.server
def test_concurrent_clashing_links_never_both_succeed(race_servers, testapp):
    """Links of ``rN`` and ``rN/y`` into one draft released together, through a real
    Waitress (the session's :func:`conftest.race_servers`, PostgreSQL and MariaDB): the
    comparison with the version's files runs under its lock, so exactly one of the two paths
    is recorded in every round."""
    from live_helpers import all_at_once, unexpected

    server = race_servers[0]
    # Without the version's lock, 4 rounds failed in each of 10 runs on PostgreSQL and MariaDB.
    rounds, clients = 4, 8
    create_model(testapp, M)
    create_version(testapp, M)
    # A blob of its own for each client: links of one blob would queue on the blob's row
    # lock and never race, whatever the version's lock does.
    blobs = [DATA + b"%d" % i for i in range(clients)]
    for i, data in enumerate(blobs):
        put(testapp, 1, f"w{i}.bin", data, status=201)
    testapp.post(f"{API}/models/{M}/versions/1/finalize", status=200)
    draft = create_version(testapp, M)["number"]
    target = f"{API}/models/{M}/versions/{draft}/files"
    for n in range(rounds):
        answers = all_at_once([
            (server, "POST", target, {"path": f"r{n}" + ("/y" if i % 2 else ""),
                                      "digest": "sha256:" + hashlib.sha256(blobs[i]).hexdigest()})
            for i in range(clients)])
        assert all(code in (200, 201, 422) for code, _ in answers), unexpected(
            answers, (200, 201, 422), server)
        assert sum(code == 201 for code, _ in answers) == 1, unexpected(
            answers, (), server)
    paths = file_paths(testapp, draft)
    assert len(paths) == rounds, paths
