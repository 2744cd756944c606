"""Policy rules from the ini (``modelreg.policy.*``): version size, quotas, protected aliases
and retention, as a client and an operator see them: statuses, error bodies, rows, and the
bytes left on disk after garbage collection."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from click.testing import CliRunner

from files_support import file_url, rows, sha
from helpers import API, create_model, create_version, error_code
from modelreg import keys
from modelreg.api import hookimpl
from modelreg.files.gc import apply_retention_everywhere, collect_garbage
from modelreg.policy import format_size, parse_size, policy_rules
from modelreg.testing import clear_database, make_app
from modelreg.worker.runner import Worker
from openapi_checking import CheckedTestApp
from security_helpers import add_principal, bearer

M = "fraud-detector"
OCTETS = "application/octet-stream"
V = f"{API}/models/{M}/versions"
A = f"{API}/models/{M}/aliases"


@pytest.fixture
def make_policy_app(modelreg_database, openapi_checker, tmp_path) -> Iterator[Callable]:
    """Build checked WebTest apps over the session's database, with the given policy
    settings and blobs in a directory of the test; the database is emptied after."""
    built: list[Any] = []

    def build(**settings: str) -> CheckedTestApp:
        wsgi = make_app({
            "sqlalchemy.url": modelreg_database.url,
            "retry.attempts": "3",
            "modelreg.storage": "local",
            "modelreg.storage.local.path": str(tmp_path / "blobs"),
            "modelreg.upload.min_chunk_size": "16",
            **{key.replace("__", "."): value for key, value in settings.items()},
        })
        built.append(wsgi)
        app = CheckedTestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        app.checker = openapi_checker
        return app

    (tmp_path / "blobs").mkdir()
    yield build
    if built:
        clear_database(built[0].registry["db_engine"])
    for wsgi in built:
        wsgi.registry["db_engine"].dispose()


def policy(**settings: str) -> dict[str, str]:
    """Settings named without their prefix: ``policy(max_version_size="1KiB")``."""
    return {f"modelreg.policy.{key.replace('__', '.')}": value
            for key, value in settings.items()}


def put(app, number: int, path: str, data: bytes, status: int | str = "*", **kw):
    return app.put(file_url(M, number, path), data, content_type=OCTETS, status=status, **kw)


def problems(response) -> list[str]:
    assert error_code(response) == "validation_failed", response.json
    return [p["code"] for p in response.json["error"]["details"]["problems"]]


def finalize(app, number: int, status: int = 200, **kw) -> dict[str, Any]:
    return app.post(f"{V}/{number}/finalize", status=status, **kw).json


def ready(app, data: bytes, path: str = "model.bin", **tags: str) -> int:
    number = create_version(app, M, tags=tags)["number"]
    put(app, number, path, data, status=201)
    assert finalize(app, number)["status"] == "ready"
    return number


def blob_files(app) -> dict[str, int]:
    """The blobs on disk: sha256 → size."""
    root = Path(app.app.registry["modelreg.blob_store"].root) / "blobs"
    return {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def doc(value: Any) -> Any:
    """A JSON column as read by raw SQL (text on SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


def worker(app) -> Worker:
    registry = app.app.registry
    return Worker.from_registry(registry)


def gc(app, **kwargs):
    registry = app.app.registry
    return collect_garbage(registry["dbsession_factory"], registry["db_engine"],
                           registry["modelreg.blob_store"], grace=dt.timedelta(0), **kwargs)


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("text", "size"), [
    ("1024", 1024), ("10GiB", 10 * 2**30), ("10 gib", 10 * 2**30), ("500MB", 500 * 10**6),
    ("2KiB", 2048), ("3kb", 3000), ("7B", 7),
])
def test_sizes_take_suffixes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "1.5GiB", "-1", "10 GiBs", "10 XB"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_sizes_in_messages():
    assert format_size(10 * 2**30) == "10737418240 bytes (10 GiB)"
    assert format_size(100) == "100 bytes"


@pytest.mark.parametrize(("key", "value"), [
    ("max_version_size", "lots"), ("max_version_size", "0"), ("quota__max_versions", "0"),
    ("quota__max_bytes", "1.5GB"), ("retention__keep_last", "-1"),
    ("retention__action", "shred"), ("protected_aliases", "Production"),
    ("protected_aliases", "production:b@d"), ("protected_aliases", "latest"),
])
def test_a_wrong_setting_stops_start_up_naming_it(modelreg_database, key, value):
    with pytest.raises(RuntimeError) as info:
        make_app({"sqlalchemy.url": modelreg_database.url, **policy(**{key: value})})
    assert f"modelreg.policy.{key.replace('__', '.')}" in str(info.value)


def test_protected_alias_entries():
    parsed = policy_rules(policy(protected_aliases="production:approved=true,reviewed staging"))
    assert list(parsed.protected_aliases) == ["production", "staging"]
    assert [str(r) for r in parsed.protected_aliases["production"]] == [
        "approved=true", "reviewed"]
    assert parsed.protected_aliases["staging"] == ()
    assert policy_rules({}).protected_aliases == {} and not policy_rules({}).retention


# ------------------------------------------------------------------------ version size


def test_an_upload_over_the_version_limit_is_refused_before_it_is_stored(make_policy_app):
    app = make_policy_app(**policy(max_version_size="1KiB"))
    create_model(app, M)
    number = create_version(app, M)["number"]
    put(app, number, "a.bin", b"a" * 600, status=201)
    response = put(app, number, "b.bin", b"b" * 500, status=422)
    assert problems(response) == ["version_too_large"]
    error = response.json["error"]
    assert error["details"]["max_version_size"] == 1024
    assert error["details"]["version_size"] == 1100
    assert "1024 bytes" in error["message"] and "1100 bytes" in error["message"]
    # Refused on Content-Length: not a byte stored, no file recorded.
    assert sha(b"b" * 500) not in blob_files(app)
    assert [f["path"] for f in rows(app, "files")] == ["a.bin"]
    # Replacing a file counts its new size only; exactly the limit is fine.
    put(app, number, "a.bin", b"c" * 1024, status=200)
    # A session that announces its size is refused when it is opened...
    response = app.post_json(f"{V}/{number}/uploads", {"path": "d.bin", "size": 10},
                             status=422)
    assert problems(response) == ["version_too_large"]
    # ...one that does not, when a chunk would take the version over.
    put(app, number, "a.bin", b"a" * 1000, status=200)
    upload = app.post_json(f"{V}/{number}/uploads", {"path": "e.bin"}, status=201).json
    response = app.patch(upload["location"], b"e" * 30, content_type=OCTETS, status=422)
    assert problems(response) == ["version_too_large"]
    assert app.get(upload["location"]).json["offset"] == 0


def test_bytes_in_open_sessions_count_towards_the_limits(make_policy_app):
    """Bytes parked in upload sessions count: a session's received bytes (or its declared
    size) leave no room for what would go over the limit together with them."""
    app = make_policy_app(**policy(max_version_size="100", quota__max_bytes="150"))
    create_model(app, M)
    number = create_version(app, M)["number"]
    upload = app.post_json(f"{V}/{number}/uploads", {"path": "big.bin"}, status=201).json
    app.patch(upload["location"], b"x" * 60, content_type=OCTETS, status=202)
    response = put(app, number, "other.bin", b"y" * 50, status=422)
    assert problems(response) == ["version_too_large"]
    assert response.json["error"]["details"]["version_size"] == 110
    response = app.post_json(f"{V}/{number}/uploads", {"path": "c.bin", "size": 41},
                             status=422)
    assert problems(response) == ["version_too_large"]
    # A second draft of the model: the first one's session counts for the model's quota.
    second = create_version(app, M)["number"]
    response = app.post_json(f"{V}/{second}/uploads", {"path": "d.bin", "size": 91},
                             status=422)
    assert problems(response) == ["quota_max_bytes"]
    assert response.json["error"]["details"]["model_bytes"] == 151
    # Aborting the session gives its bytes back.
    app.delete(upload["location"], status=204)
    put(app, number, "other.bin", b"y" * 100, status=201)


def test_content_refused_at_completion_is_deleted_at_once(make_policy_app, tmp_path):
    """A limit lowered while a session held bytes: completion is refused, and the session
    and its bytes are gone at once, not at the next garbage collection."""
    loose = make_policy_app()
    create_model(loose, M)
    number = create_version(loose, M)["number"]
    upload = loose.post_json(f"{V}/{number}/uploads", {"path": "big.bin"}, status=201).json
    loose.patch(upload["location"], b"x" * 60, content_type=OCTETS, status=202)
    assert os.listdir(tmp_path / "blobs" / "uploads") != []
    strict = make_policy_app(**policy(max_version_size="50"))
    response = strict.put(f"{upload['location']}?digest=sha256:{sha(b'x' * 60)}", b"",
                          status=422)
    assert problems(response) == ["version_too_large"]
    assert rows(strict, "files") == [] and rows(strict, "upload_sessions") == []
    assert rows(strict, "upload_parts") == [] and rows(strict, "blobs") == []
    assert sha(b"x" * 60) not in blob_files(strict)
    assert os.listdir(tmp_path / "blobs" / "uploads") == []
    assert os.listdir(tmp_path / "blobs" / "tmp") == []


def test_finalize_rejects_a_version_over_the_limit_with_every_problem(make_policy_app):
    """A limit lowered after the upload: finalize rejects the version and reports the size
    together with the other validators' problems."""
    loose = make_policy_app()
    create_model(loose, M)
    number = create_version(loose, M)["number"]
    put(loose, number, "a.bin", b"a" * 300, status=201)
    strict = make_policy_app(**policy(max_version_size="200", required_version_tags="approved",
                                      required_metadata="framework"))
    version = finalize(strict, number)
    assert version["status"] == "rejected"
    assert sorted(p["code"] for p in version["problems"]) == [
        "missing_metadata", "missing_tag", "version_too_large"]
    assert rows(strict, "versions")[0]["digest"] is None


# ---------------------------------------------------------------------------- quotas


def test_the_version_quota_refuses_a_new_version(make_policy_app):
    app = make_policy_app(**policy(quota__max_versions="2"))
    create_model(app, M)
    create_version(app, M)
    create_version(app, M)
    response = app.post_json(V, {}, status=422)
    assert problems(response) == ["quota_max_versions"]
    assert response.json["error"]["details"] == {
        "problems": response.json["error"]["details"]["problems"],
        "max_model_versions": 2, "model_versions": 2}
    assert len(rows(app, "versions")) == 2
    # The number was not used up.
    app.delete(f"{V}/2", status=204)
    assert create_version(app, M)["number"] == 3


def test_the_version_quota_holds_under_concurrent_creators(make_policy_app):
    """Eight creators at once, room for three: the counter's row lock makes them count one
    by one, so exactly three versions exist, numbered 1 to 3."""
    app = make_policy_app(**policy(quota__max_versions="3"))
    create_model(app, M)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def create() -> None:
        client = webtest.TestApp(app.app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        barrier.wait()
        statuses.append(client.post_json(V, {}, expect_errors=True).status_int)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201] * 3 + [422] * 5
    assert sorted(r["number"] for r in rows(app, "versions")) == [1, 2, 3]


def test_the_byte_quota_and_the_version_limit_are_reported_together(make_policy_app):
    app = make_policy_app(**policy(quota__max_bytes="1000", max_version_size="400"))
    create_model(app, M)
    ready(app, b"a" * 400)
    number = create_version(app, M)["number"]
    put(app, number, "small.bin", b"s" * 300, status=201)
    response = put(app, number, "big.bin", b"b" * 350, status=422)
    assert sorted(problems(response)) == ["quota_max_bytes", "version_too_large"]
    details = response.json["error"]["details"]
    assert (details["model_bytes"], details["max_model_bytes"]) == (1050, 1000)
    assert (details["version_size"], details["max_version_size"]) == (650, 400)
    put(app, number, "fits.bin", b"f" * 100, status=201)


# -------------------------------------------------------------------- protected aliases


@pytest.fixture
def guarded(make_policy_app):
    """An app without anonymous access where ``production`` needs the tags approved=true
    and reviewed, and ``staging`` nothing but an admin; version 1 carries no tag, version
    2 approved=false and reviewed, version 3 approved=true and reviewed."""
    app = make_policy_app(**{"modelreg.auth.anonymous": "none"},
                          **policy(protected_aliases="production:approved=true,reviewed "
                                                     "staging"))
    wsgi = app.app
    tokens = {
        "writer": add_principal(wsgi, "writer", grants=[("fraud-*", "write")]),
        "admin": add_principal(wsgi, "owner", grants=[("fraud-detector", "admin")]),
        "outsider": add_principal(wsgi, "outsider"),
    }
    tokens["admin_write_token"] = add_principal(
        wsgi, "owner2", grants=[("fraud-detector", "admin")], scopes=["write"])
    writer = bearer(tokens["writer"])
    app.post_json(f"{API}/models", {"name": M}, headers=writer, status=201)
    for tags in ({}, {"approved": "false", "reviewed": "yes"},
                 {"approved": "true", "reviewed": "yes"}):
        number = app.post_json(V, {"tags": tags}, headers=writer, status=201).json["number"]
        put(app, number, "model.bin", b"weights %d" % number, status=201, headers=writer)
        finalize(app, number, headers=writer)
    app.tokens = {name: bearer(token) for name, token in tokens.items()}
    return app


def test_only_an_admin_may_set_move_or_delete_a_protected_alias(guarded):
    app, t = guarded, guarded.tokens
    response = app.put_json(f"{A}/production", {"version": 3}, headers=t["writer"], status=403)
    assert error_code(response) == "protected_alias"
    assert response.json["error"]["details"]["alias"] == "production"
    assert response.json["error"]["details"]["permission"] == "admin"
    response = app.put_json(f"{A}/staging", {"version": 1}, headers=t["writer"], status=403)
    assert error_code(response) == "protected_alias"
    # The token's scope caps its admin principal.
    response = app.put_json(f"{A}/staging", {"version": 1}, headers=t["admin_write_token"],
                            status=403)
    assert response.json["error"]["details"]["reason"] == "token_scope"
    app.put_json(f"{A}/staging", {"version": 1}, status=401)
    assert error_code(app.put_json(f"{A}/staging", {"version": 1}, headers=t["outsider"],
                                   status=404)) == "model_not_found"
    # Other aliases stay open to writers.
    app.put_json(f"{A}/champion", {"version": 1}, headers=t["writer"], status=201)
    app.put_json(f"{A}/staging", {"version": 1}, headers=t["admin"], status=201)
    app.put_json(f"{A}/staging", {"version": 2}, headers=t["admin"], status=200)
    assert error_code(app.delete(f"{A}/staging", headers=t["writer"],
                                 status=403)) == "protected_alias"
    app.delete(f"{A}/staging", headers=t["admin"], status=204)
    history = app.get(f"{A}/staging/history", headers=t["writer"]).json["history"]
    assert [(h["from_version"], h["to_version"], h["actor"]) for h in history] == [
        (2, None, "owner"), (1, 2, "owner"), (None, 1, "owner")]


def test_dropping_a_protected_alias_with_its_version_needs_an_admin(guarded):
    app, t = guarded, guarded.tokens
    app.put_json(f"{A}/staging", {"version": 1}, headers=t["admin"], status=201)
    response = app.delete(f"{V}/1?drop_aliases=staging", headers=t["writer"], status=403)
    assert error_code(response) == "protected_alias"
    assert response.json["error"]["details"]["alias"] == "staging"
    app.get(f"{V}/1", headers=t["writer"], status=200)
    app.delete(f"{V}/1?drop_aliases=staging", headers=t["admin"], status=204)
    history = app.get(f"{A}/staging/history", headers=t["writer"]).json["history"]
    assert [(h["from_version"], h["to_version"], h["actor"]) for h in history] == [
        (1, None, "owner"), (None, 1, "owner")]


def test_a_protected_alias_points_only_at_a_version_with_its_tags(guarded):
    app, admin = guarded, guarded.tokens["admin"]
    response = app.put_json(f"{A}/production", {"version": 1}, headers=admin, status=422)
    assert problems(response) == ["protected_alias_tag", "protected_alias_tag"]
    fields = [p["field"] for p in response.json["error"]["details"]["problems"]]
    assert fields == ["tags.approved", "tags.reviewed"]
    response = app.put_json(f"{A}/production", {"version": 2}, headers=admin, status=422)
    (problem,) = response.json["error"]["details"]["problems"]
    assert "'approved=true'" in problem["message"] and "'false'" in problem["message"]
    assert rows(app, "aliases") == []
    app.put_json(f"{A}/production", {"version": 3}, headers=admin, status=201)
    # The tags it needs cannot be taken away while it points there, by anyone.
    writer = guarded.tokens["writer"]
    response = app.delete(f"{V}/3/tags/approved", headers=admin, status=422)
    assert problems(response) == ["protected_alias_tag"]
    response = app.put_json(f"{V}/3/tags/approved", {"value": "no"}, headers=writer,
                            status=422)
    assert problems(response) == ["protected_alias_tag"]
    app.put_json(f"{V}/3/tags/other", {"value": "x"}, headers=writer, status=200)
    assert app.get(f"{V}/3", headers=writer).json["tags"] == {
        "approved": "true", "other": "x", "reviewed": "yes"}
    # Moving it back onto an untagged version is refused too.
    app.put_json(f"{A}/production", {"version": 1}, headers=admin, status=422)
    assert app.get(f"{A}/production", headers=writer).json["version"] == 3
    app.delete(f"{A}/production", headers=admin, status=204)
    app.delete(f"{V}/3/tags/approved", headers=writer, status=204)


class AliasWatcher:
    """A plugin with an alias rule that refuses nothing and keeps what it was shown."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def modelreg_validate_alias(self, model: dict[str, Any], alias: str,
                                version: dict[str, Any], previous: dict[str, Any] | None
                                ) -> list[Any]:
        self.calls.append({"model": model, "alias": alias, "version": version,
                           "previous": previous})
        return []


@pytest.fixture
def alias_watcher(modelreg_app) -> Iterator[AliasWatcher]:
    """An :class:`AliasWatcher` registered with the test app's plugins for the test."""
    pm = modelreg_app.registry[keys.PLUGIN_MANAGER]
    watcher = AliasWatcher()
    pm.register(watcher)
    yield watcher
    pm.unregister(watcher)


def test_the_alias_hook_gets_plain_data(testapp, alias_watcher):
    """``modelreg_validate_alias`` on creation, on a move (with the previous target), not
    when nothing changes, and on a tag change of the target (as it is and as it will be)."""
    create_model(testapp, M)
    ready(testapp, b"one", stage="dev")
    ready(testapp, b"two")
    testapp.put_json(f"{A}/champion", {"version": 1}, status=201)
    testapp.put_json(f"{A}/champion", {"version": 1}, status=200)
    testapp.put_json(f"{A}/champion", {"version": 2}, status=200)
    testapp.put_json(f"{V}/2/tags/stage", {"value": "prod"})
    calls = alias_watcher.calls
    assert [(c["alias"], c["version"]["number"], c["previous"] and c["previous"]["number"])
            for c in calls] == [("champion", 1, None), ("champion", 2, 1), ("champion", 2, 2)]
    assert calls[0]["version"]["tags"] == {"stage": "dev"}
    assert calls[0]["version"]["status"] == "ready"
    assert calls[0]["model"]["name"] == M
    assert (calls[2]["previous"]["tags"], calls[2]["version"]["tags"]) == ({}, {"stage": "prod"})


def test_no_alias_rule_no_alias_hook_call(testapp, hook_recorder):
    """With no protected alias and no plugin's alias rule, nothing could refuse an alias's
    target: setting an alias and changing its version's tags ask no one (and read none of
    the documents a rule would see, tests/test_statement_counts.py)."""
    create_model(testapp, M)
    ready(testapp, b"one", stage="dev")
    testapp.put_json(f"{A}/champion", {"version": 1}, status=201)
    testapp.put_json(f"{V}/1/tags/stage", {"value": "prod"})
    testapp.delete(f"{V}/1/tags/stage", status=204)
    assert hook_recorder.named("modelreg_validate_alias") == []
    assert testapp.get(f"{V}/champion").json["tags"] == {}


# ----------------------------------------------------------------------------- retention


def test_retention_archives_old_versions_and_gc_frees_their_bytes(make_policy_app):
    app = make_policy_app(**policy(retention__keep_last="1", retention__action="archive",
                                   quota__max_versions="4"))
    create_model(app, M)
    ready(app, b"one")  # 1: will hold an alias
    app.put_json(f"{A}/champion", {"version": 1}, status=201)
    two = create_version(app, M)["number"]
    put(app, two, "unique.bin", b"only in two", status=201)
    put(app, two, "shared.bin", b"shared bytes", status=201)
    finalize(app, two)
    three = create_version(app, M)["number"]
    put(app, three, "shared.bin", b"shared bytes", status=201)
    finalize(app, three)
    draft = create_version(app, M)["number"]
    put(app, draft, "draft.bin", b"draft", status=201)
    assert error_code(app.post_json(V, {}, status=422)) == "validation_failed"
    worker(app).run_once()
    statuses = {v["number"]: v["status"] for v in app.get(V).json["versions"]}
    assert statuses == {1: "ready", 2: "archived", 3: "ready", 4: "draft"}
    # An archived version keeps its record and its file list, not its content.
    assert [f["path"] for f in app.get(f"{V}/2/files").json["files"]] == [
        "shared.bin", "unique.bin"]
    response = app.get(file_url(M, 2, "unique.bin"), status=410)
    assert error_code(response) == "version_archived"
    assert app.get(V, {"filter": "status = 'archived'"}).json["versions"][0]["number"] == 2
    assert error_code(app.put_json(f"{A}/old", {"version": 2}, status=409)) == (
        "version_not_ready")
    # It counts for no quota any more.
    create_version(app, M)
    events = [r for r in rows(app, "audit_events") if r["actor"] == "system:retention"]
    assert [(e["action"], e["target"]) for e in events] == [("version.archived", f"{M}/2")]
    assert doc(events[0]["before"]) == {"number": 2, "status": "ready"}
    assert "version.archived" in [r["type"] for r in rows(app, "outbox")]
    # Garbage collection frees the archived version's own bytes, not those it shared.
    before = blob_files(app)
    report = gc(app)
    assert report.blobs == [(sha(b"only in two"), 11)]
    after = blob_files(app)
    assert set(before) - set(after) == {sha(b"only in two")}
    assert sum(before.values()) - sum(after.values()) == 11
    assert app.get(file_url(M, 3, "shared.bin")).body == b"shared bytes"
    assert app.get(file_url(M, 1, "model.bin")).body == b"one"
    # Moving the alias away makes version 1 a candidate: 3 is newer and kept... by alias.
    app.put_json(f"{A}/champion", {"version": 3}, status=200)
    worker(app).run_once()
    statuses = {v["number"]: v["status"] for v in app.get(V).json["versions"]}
    assert statuses[1] == "ready" and statuses[3] == "ready"
    app.delete(f"{A}/champion", status=204)
    worker(app).run_once()
    statuses = {v["number"]: v["status"] for v in app.get(V).json["versions"]}
    assert (statuses[1], statuses[3]) == ("archived", "ready")


def test_gc_applies_retention_with_delete_and_frees_the_bytes(make_policy_app, tmp_path,
                                                            modelreg_database):
    app = make_policy_app(**policy(retention__keep_last="1", retention__action="delete"))
    create_model(app, M)
    for data in (b"first", b"second", b"third"):
        ready(app, data)
    app.put_json(f"{A}/champion", {"version": 1}, status=201)
    rejected = create_version(app, M)["number"]
    put(app, rejected, "model.bin", b"rejected", status=201)
    app.put_json(f"{V}/{rejected}/tags/x", {"value": "y"})
    create_version(app, M)  # 5: a draft, never touched
    ini = tmp_path / "gc.ini"
    settings = app.app.registry.settings
    ini.write_text("[app:main]\nuse = egg:modelreg\n" + "".join(
        f"{key} = {value}\n" for key, value in settings.items()
        if key.startswith(("sqlalchemy.url", "modelreg.storage", "modelreg.policy"))))
    from modelreg_client.cli import main

    result = CliRunner().invoke(main, ["gc", str(ini), "--no-retention", "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert "retention" not in result.output and len(rows(app, "versions")) == 5
    result = CliRunner().invoke(main, ["gc", str(ini), "--dry-run", "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert "retention: would delete version 2 of fraud-detector" in result.output
    assert len(rows(app, "versions")) == 5
    result = CliRunner().invoke(main, ["gc", str(ini), "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert "retention: deleted version 2 of fraud-detector" in result.output
    assert f"deleted blob sha256:{sha(b'second')} (6 bytes)" in result.output
    assert sorted(v["number"] for v in app.get(V).json["versions"]) == [1, 3, 4, 5]
    assert sha(b"second") not in blob_files(app)
    assert {sha(b"first"), sha(b"third"), sha(b"rejected")} <= set(blob_files(app))
    app.get(f"{V}/2", status=404)
    (event,) = [r for r in rows(app, "audit_events") if r["actor"] == "system:retention"]
    assert (event["action"], event["target"]) == ("version.deleted", f"{M}/2")
    assert doc(event["after"]) == {"reason": "retention"}
    # A rejected version counts and goes like a ready one: finalize 4 (rejected), then 3
    # is past keep_last.
    strict = make_policy_app(**policy(required_version_tags="approved",
                                      retention__keep_last="1", retention__action="delete"))
    assert finalize(strict, 4)["status"] == "rejected"
    result = CliRunner().invoke(main, ["gc", str(ini), "--grace", "0"])
    assert "retention: deleted version 3 of fraud-detector" in result.output
    assert sorted(v["number"] for v in app.get(V).json["versions"]) == [1, 4, 5]


def test_switching_from_archive_to_delete_deletes_the_archived(make_policy_app):
    archiving = make_policy_app(**policy(retention__keep_last="1"))
    create_model(archiving, M)
    for data in (b"first", b"second"):
        ready(archiving, data)
    worker(archiving).run_once()
    assert [v["status"] for v in archiving.get(V).json["versions"]] == ["ready", "archived"]
    deleting = make_policy_app(**policy(retention__keep_last="1", retention__action="delete"))
    registry = deleting.app.registry
    done = apply_retention_everywhere(registry["dbsession_factory"], registry["db_engine"],
                                      registry["modelreg.plugin_manager"].hook,
                                      registry.settings)
    assert done == [{"model": M, "version": 1, "action": "delete"}]
    assert [v["number"] for v in deleting.get(V).json["versions"]] == [2]
    assert [b for b, _ in gc(deleting).blobs] == [sha(b"first")]


def test_alias_rules_are_known_with_the_installed_plugins():
    """With the entry points loaded (the core's validators under their entry point's name),
    no alias rule exists until a protected alias is configured."""
    from modelreg.plugins import get_plugin_manager
    from modelreg.validation import alias_rules

    hook = get_plugin_manager({}).hook
    assert alias_rules(hook, {}) is False
    assert alias_rules(hook, {"modelreg.policy.protected_aliases": "champion"}) is True
