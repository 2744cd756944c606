"""Models over REST: create, read, list, rename, describe, tag, delete; names and look-alikes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers import API, create_model, create_version, error_code


def test_create_and_get(testapp):
    created = testapp.post_json(
        f"{API}/models",
        {"name": "fraud-detector", "description": "Card fraud", "tags": {"team": "risk"}},
        status=201,
    )
    assert created.location.endswith("/api/v1/models/fraud-detector")
    body = testapp.get(f"{API}/models/fraud-detector").json
    assert body["name"] == "fraud-detector"
    assert body["description"] == "Card fraud"
    assert body["tags"] == {"team": "risk"}
    assert body["aliases"] == {}
    assert body["latest_version"] is None
    assert body["created_at"].endswith("Z")


def test_lookup_is_case_insensitive_but_keeps_the_given_name(testapp):
    create_model(testapp, "Fraud-Detector")
    assert testapp.get(f"{API}/models/fraud-detector").json["name"] == "Fraud-Detector"


@pytest.mark.parametrize(
    "lookalike",
    ["fraud-detector", "FRAUD-DETECTOR", "Fraud-Detector", " fraud-detector ",
     "\uff46\uff52\uff41\uff55\uff44-detector", "fraud-detector\u3000"],
)
def test_duplicates_and_lookalikes_conflict(testapp, lookalike):
    create_model(testapp, "fraud-detector")
    response = testapp.post_json(f"{API}/models", {"name": lookalike}, status=409)
    assert error_code(response) == "model_exists"
    assert response.json["error"]["details"]["existing"] == "fraud-detector"
    assert len(testapp.get(f"{API}/models").json["models"]) == 1


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        ("a/b", "ASCII letters"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("-lead", "start and end"),
        ("trail.", "start and end"),
        ("spaces in", "ASCII letters"),
        ("x" * 129, "at most 128"),
        ("naïve", "ASCII letters"),
        ("tab\tname", "control characters"),
    ],
)
def test_invalid_names_are_422_with_the_rule(testapp, name, rule):
    response = testapp.post_json(f"{API}/models", {"name": name}, status=422)
    assert error_code(response) == "invalid_name"
    assert rule in response.json["error"]["details"]["rule"]


def test_unknown_fields_and_wrong_types_are_422(testapp):
    response = testapp.post_json(f"{API}/models", {"name": "m", "colour": "red"}, status=422)
    assert error_code(response) == "invalid_body"
    assert response.json["error"]["details"]["problems"][0]["field"] == "colour"
    response = testapp.post_json(f"{API}/models", {"name": 3}, status=422)
    assert response.json["error"]["details"]["problems"][0]["field"] == "name"


def test_malformed_json_is_400(testapp):
    for body in (b"{", b"[1, 2]", b"\xff\xfe", b'"string"'):
        response = testapp.post(f"{API}/models", body, content_type="application/json",
                                status=400)
        assert error_code(response) == "invalid_json"


def test_deeply_nested_json_is_refused_cleanly(testapp):
    body = b'{"name": "m", "tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = testapp.post(f"{API}/models", body, content_type="application/json", status=400)
    assert error_code(response) == "invalid_json"


def test_nul_in_strings_and_paths_is_refused(testapp):
    create_model(testapp)
    response = testapp.post_json(f"{API}/models", {"name": "ok", "description": "a\x00b"},
                                 status=422)
    assert error_code(response) == "invalid_body"
    response = testapp.post_json(f"{API}/models/fraud-detector/versions",
                                 {"metadata": {"k\x00": 1}}, status=422)
    for path in ("/models/a%00b", "/models/fraud-detector/tags/k%00",
                 "/models/fraud-detector/aliases/a%01/history"):
        response = testapp.get(API + path, status=404) if "tags" not in path else \
            testapp.delete(API + path, status=404)
        assert error_code(response) == "not_found"


def test_over_large_body_is_413(testapp):
    body = {"name": "m", "description": "x" * (1024 * 1024)}
    response = testapp.post_json(f"{API}/models", body, status=413)
    assert error_code(response) == "payload_too_large"
    testapp.get(f"{API}/models/m", status=404)


def test_rename_and_describe(testapp):
    create_model(testapp, "old-name")
    body = testapp.patch_json(f"{API}/models/old-name",
                              {"name": "new-name", "description": "now better"}).json
    assert body["name"] == "new-name"
    assert body["description"] == "now better"
    testapp.get(f"{API}/models/old-name", status=404)
    testapp.get(f"{API}/models/new-name", status=200)


def test_rename_case_only_is_allowed(testapp):
    create_model(testapp, "model-a")
    assert testapp.patch_json(f"{API}/models/model-a", {"name": "Model-A"}).json["name"] == \
        "Model-A"


def test_rename_onto_existing_or_lookalike_conflicts(testapp):
    create_model(testapp, "a-model")
    create_model(testapp, "b-model")
    response = testapp.patch_json(f"{API}/models/a-model", {"name": "B-MODEL"}, status=409)
    assert error_code(response) == "model_exists"
    assert testapp.get(f"{API}/models/a-model").json["name"] == "a-model"


def test_tags(testapp):
    create_model(testapp)
    testapp.put_json(f"{API}/models/fraud-detector/tags/team", {"value": "risk"})
    testapp.put_json(f"{API}/models/fraud-detector/tags/team", {"value": "fraud"})
    assert testapp.get(f"{API}/models/fraud-detector").json["tags"] == {"team": "fraud"}
    testapp.delete(f"{API}/models/fraud-detector/tags/team", status=204)
    assert testapp.get(f"{API}/models/fraud-detector").json["tags"] == {}
    response = testapp.delete(f"{API}/models/fraud-detector/tags/team", status=404)
    assert error_code(response) == "tag_not_found"
    response = testapp.put_json(f"{API}/models/fraud-detector/tags/bad%20key", {"value": "x"},
                                status=422)
    assert error_code(response) == "invalid_tag"
    response = testapp.put_json(f"{API}/models/fraud-detector/tags/k", {"value": "a\x01b"},
                                status=422)
    assert error_code(response) == "invalid_tag"


def test_delete_model_removes_everything(testapp, modelreg_app):
    create_model(testapp)
    create_version(testapp, tags={"k": "v"})
    testapp.delete(f"{API}/models/fraud-detector", status=204)
    testapp.get(f"{API}/models/fraud-detector", status=404)
    engine = modelreg_app.registry["db_engine"]
    with engine.connect() as conn:
        for table in ("models", "versions", "version_tags", "model_tags", "aliases"):
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0
    # Re-creating the name starts a fresh model.
    create_model(testapp)
    assert create_version(testapp)["number"] == 1


def test_unknown_model_is_404_everywhere(testapp):
    for method, path in [
        ("get", "/models/nope"), ("delete", "/models/nope"), ("get", "/models/nope/versions"),
        ("get", "/models/nope/versions/1"), ("get", "/models/nope/aliases"),
        ("get", "/models/nope/aliases/champion"),
    ]:
        response = getattr(testapp, method)(API + path, status=404)
        assert error_code(response) == "model_not_found"


def test_audit_and_outbox_rows_written_with_each_change(testapp, modelreg_app):
    create_model(testapp)
    testapp.put_json(f"{API}/models/fraud-detector/tags/team", {"value": "risk"})
    create_version(testapp)
    engine = modelreg_app.registry["db_engine"]
    with engine.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM audit_events ORDER BY id")).scalars()
        assert list(actions) == ["model.created", "model.tag_set", "version.created"]
        events = conn.execute(sa.text("SELECT type, model, event_id FROM outbox ORDER BY id"))
        rows = events.all()
    assert [r.type for r in rows] == ["model.created", "model.tag_set", "version.created"]
    assert {r.model for r in rows} == {"fraud-detector"}
    assert len({r.event_id for r in rows}) == 3


def test_refused_request_writes_nothing(testapp, modelreg_app):
    create_model(testapp)
    testapp.post_json(f"{API}/models", {"name": "FRAUD-detector"}, status=409)
    testapp.post_json(f"{API}/models/fraud-detector/versions", {"tags": {"bad key": "v"}},
                      status=422)
    engine = modelreg_app.registry["db_engine"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM audit_events")).scalar() == 1
        assert conn.execute(sa.text("SELECT COUNT(*) FROM versions")).scalar() == 0
        assert conn.execute(sa.text("SELECT next_version FROM models")).scalar() == 1
