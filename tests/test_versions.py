"""Versions: numbering, refs, lifecycle, metadata, tags, finalize and validation."""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa

from helpers import (
    API,
    add_file,
    create_model,
    create_version,
    error_code,
    ready_version,
)

V = f"{API}/models/fraud-detector/versions"


def test_numbers_count_up_and_are_never_reused(testapp):
    create_model(testapp)
    assert [create_version(testapp)["number"] for _ in range(3)] == [1, 2, 3]
    testapp.delete(f"{V}/3", status=204)
    assert create_version(testapp)["number"] == 4
    # Drafts are not "latest": that is the newest ready version, and there is none yet.
    assert testapp.get(f"{API}/models/fraud-detector").json["latest_version"] is None


def test_latest_is_the_newest_ready_version_everywhere(testapp):
    create_model(testapp)
    ready_version(testapp)
    ready_version(testapp)
    assert create_version(testapp)["number"] == 3  # a newer draft
    model = testapp.get(f"{API}/models/fraud-detector").json
    listed = testapp.get(f"{API}/models", {"filter": "name = 'fraud-detector'"}).json
    latest = testapp.get(f"{V}/latest").json
    assert model["latest_version"] == listed["models"][0]["latest_version"] == 2
    assert latest["number"] == 2
    assert testapp.get(f"{V}/3").json["status"] == "draft"


def test_create_with_metadata_lineage_and_tags(testapp):
    create_model(testapp)
    create_model(testapp, "other")
    create_version(testapp)
    body = create_version(
        testapp,
        description="first try",
        metadata={"framework": "pytorch", "metrics": {"auc": 0.93}, "params": {"lr": 0.01}},
        lineage={"run_id": "run-42", "source_commit": "abc123", "dataset_digests": ["sha256:00"],
                 "parent_version": 1, "notebook": "train.ipynb"},
        tags={"stage": "dev"},
    )
    assert body["status"] == "draft"
    assert body["metadata"]["metrics"] == {"auc": 0.93}
    assert body["lineage"]["run_id"] == "run-42"
    assert body["lineage"]["notebook"] == "train.ipynb"
    assert body["tags"] == {"stage": "dev"}
    again = testapp.get(f"{V}/2").json
    assert again == body
    response = testapp.post_json(V, {"lineage": {"parent_version": 9}}, status=422)
    assert error_code(response) == "invalid_lineage"


def test_metadata_too_large_is_422(testapp):
    create_model(testapp)
    response = testapp.post_json(V, {"metadata": {"blob": "x" * 70_000}}, status=422)
    assert error_code(response) == "document_too_large"


def test_finalize_makes_ready_and_immutable(testapp):
    create_model(testapp)
    create_version(testapp, metadata={"a": 1})
    add_file(testapp, "fraud-detector", 1)
    body = testapp.post(f"{V}/1/finalize", status=200).json
    assert body["status"] == "ready"
    assert body["digest"].startswith("sha256:") and len(body["digest"]) == 71
    assert body["finalized_at"]
    response = testapp.post(f"{V}/1/finalize", status=409)
    assert error_code(response) == "version_not_draft"
    response = testapp.patch_json(f"{V}/1", {"metadata": {"a": 2}}, status=409)
    assert error_code(response) == "version_immutable"
    # Descriptions and tags annotate, so they may still change.
    assert testapp.patch_json(f"{V}/1", {"description": "ok"}).json["description"] == "ok"
    testapp.put_json(f"{V}/1/tags/reviewed", {"value": "yes"})
    assert testapp.get(f"{V}/1").json["tags"] == {"reviewed": "yes"}


def test_draft_metadata_can_change(testapp):
    create_model(testapp)
    create_version(testapp, metadata={"a": 1})
    body = testapp.patch_json(f"{V}/1", {"metadata": {"a": 2}, "lineage": {"run_id": "r"}}).json
    assert body["metadata"] == {"a": 2}
    assert body["lineage"]["run_id"] == "r"


def test_refs_number_alias_latest_digest(testapp):
    create_model(testapp)
    first = ready_version(testapp)
    create_version(testapp)  # draft 2: not "latest", which means the newest ready version
    testapp.put_json(f"{API}/models/fraud-detector/aliases/champion", {"version": 1})
    assert testapp.get(f"{V}/1").json["number"] == 1
    assert testapp.get(f"{V}/champion").json["number"] == 1
    assert testapp.get(f"{V}/latest").json["number"] == 1
    assert testapp.get(f"{V}/{first['digest']}").json["number"] == 1
    for ref in ("9", "nope", "sha256:" + "0" * 64):
        response = testapp.get(f"{V}/{ref}", status=404)
        assert error_code(response) == "version_not_found"


def test_writes_name_versions_by_number(testapp):
    create_model(testapp)
    ready_version(testapp)
    testapp.put_json(f"{API}/models/fraud-detector/aliases/champion", {"version": 1})
    for call in (
        lambda: testapp.patch_json(f"{V}/champion", {"description": "x"}, status=422),
        lambda: testapp.delete(f"{V}/champion", status=422),
        lambda: testapp.post(f"{V}/latest/finalize", status=422),
    ):
        assert error_code(call()) == "invalid_version_number"


def test_delete_version_with_alias_conflicts(testapp):
    create_model(testapp)
    ready_version(testapp)
    testapp.put_json(f"{API}/models/fraud-detector/aliases/champion", {"version": 1})
    response = testapp.delete(f"{V}/1", status=409)
    assert error_code(response) == "version_has_aliases"
    testapp.delete(f"{API}/models/fraud-detector/aliases/champion", status=204)
    testapp.delete(f"{V}/1", status=204)
    testapp.get(f"{V}/1", status=404)


def test_delete_version_dropping_the_aliases_it_names(testapp):
    aliases = f"{API}/models/fraud-detector/aliases"
    create_model(testapp)
    ready_version(testapp)
    ready_version(testapp)
    for name, number in (("champion", 1), ("staging", 1), ("canary", 2)):
        testapp.put_json(f"{aliases}/{name}", {"version": number}, status=201)
    # Naming some of them is not enough: the answer names every alias and those kept.
    response = testapp.delete(f"{V}/1?drop_aliases=champion,canary", status=409)
    assert error_code(response) == "version_has_aliases"
    assert response.json["error"]["details"] == {
        "model": "fraud-detector", "version": 1, "aliases": ["champion", "staging"],
        "not_dropped": ["staging"]}
    assert error_code(testapp.delete(f"{V}/1?drop_aliases=Champion", status=422)) == \
        "invalid_alias"
    testapp.get(f"{V}/1", status=200)
    # Named (comma-separated or repeated): both go with the version; canary points elsewhere
    # and stays.
    testapp.delete(f"{V}/1?drop_aliases=champion,canary&drop_aliases=staging", status=204)
    testapp.get(f"{V}/1", status=404)
    assert testapp.get(f"{API}/models/fraud-detector").json["aliases"] == {"canary": 2}
    for name in ("champion", "staging"):
        testapp.get(f"{aliases}/{name}", status=404)
        history = testapp.get(f"{aliases}/{name}/history").json["history"]
        assert [(h["from_version"], h["to_version"]) for h in history] == [(1, None), (None, 1)]
    engine = testapp.app.registry["db_engine"]
    with engine.connect() as conn:
        audit = conn.execute(sa.text(
            "SELECT action, target FROM audit_events WHERE action IN "
            "('alias.deleted', 'version.deleted') ORDER BY id")).all()
        outbox = conn.execute(sa.text(
            "SELECT type, payload FROM outbox WHERE type IN "
            "('alias.deleted', 'version.deleted') ORDER BY id")).all()
    assert [tuple(row) for row in audit] == [
        ("alias.deleted", "fraud-detector@champion"), ("alias.deleted", "fraud-detector@staging"),
        ("version.deleted", "fraud-detector/1")]
    assert [row.type for row in outbox] == ["alias.deleted", "alias.deleted", "version.deleted"]
    payload = outbox[0].payload
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload["target"] == "fraud-detector@champion"
    assert payload["before"] == {"version": 1}


def test_version_tags(testapp):
    create_model(testapp)
    create_version(testapp)
    testapp.put_json(f"{V}/1/tags/stage", {"value": "dev"})
    assert testapp.get(f"{V}/1").json["tags"] == {"stage": "dev"}
    testapp.delete(f"{V}/1/tags/stage", status=204)
    response = testapp.delete(f"{V}/1/tags/stage", status=404)
    assert error_code(response) == "tag_not_found"


def test_list_versions_newest_first_with_paging(testapp):
    create_model(testapp)
    for _ in range(5):
        create_version(testapp)
    page = testapp.get(V, {"page_size": 2}).json
    assert [v["number"] for v in page["versions"]] == [5, 4]
    seen = [v["number"] for v in page["versions"]]
    while page["next_page_token"]:
        page = testapp.get(V, {"page_size": 2, "page_token": page["next_page_token"]}).json
        seen += [v["number"] for v in page["versions"]]
    assert seen == [5, 4, 3, 2, 1]
    ascending = testapp.get(V, {"order_by": "number asc"}).json["versions"]
    assert [v["number"] for v in ascending] == [1, 2, 3, 4, 5]


def test_policy_rejects_with_every_problem(modelreg_database):
    """Finalize runs the core's validators (a plugin) with the ini's policy settings."""
    import webtest

    from modelreg.testing import clear_database, make_app

    app = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "modelreg.policy.required_metadata": "framework metrics.auc",
        "modelreg.policy.required_version_tags": "owner",
        "modelreg.policy.model_name_pattern": "[a-z0-9-]+",
        "modelreg.policy.required_model_tags": "team",
    })
    try:
        test = webtest.TestApp(app)
        response = test.post_json(f"{API}/models", {"name": "Bad_Name"}, status=422)
        problems = response.json["error"]["details"]["problems"]
        assert {p["code"] for p in problems} == {"name_pattern", "missing_tag"}
        create_model(test, "good", tags={"team": "risk"})
        create_version(test, "good", metadata={"metrics": {"loss": 1}})
        add_file(test, "good", 1)
        body = test.post(f"{API}/models/good/versions/1/finalize", status=200).json
        assert body["status"] == "rejected"
        assert body["digest"] is None
        assert {p["field"] for p in body["problems"]} == {
            "metadata.framework", "metadata.metrics.auc", "tags.owner"}
        response = test.put_json(f"{API}/models/good/aliases/champion", {"version": 1},
                                 status=409)
        assert error_code(response) == "version_not_ready"
        create_version(test, "good", metadata={"framework": "sklearn", "metrics": {"auc": 0.9}},
                       tags={"owner": "ana"})
        add_file(test, "good", 2)
        assert test.post(f"{API}/models/good/versions/2/finalize").json["status"] == "ready"
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


def test_finalize_passes_plain_data_to_hooks(testapp, hook_recorder):
    create_model(testapp)
    create_version(testapp, metadata={"framework": "onnx"})
    add_file(testapp, "fraud-detector", 1)
    testapp.post(f"{V}/1/finalize")
    (call,) = hook_recorder.named("modelreg_validate_version")
    assert call["version"]["metadata"] == {"framework": "onnx"}
    assert call["version"]["files"] == [{
        "path": "model.bin", "size": 7, "media_type": "application/octet-stream",
        "sha256": hashlib.sha256(b"weights").hexdigest()}]
    assert call["model"]["name"] == "fraud-detector"


def test_counter_is_the_source_of_numbers(testapp, modelreg_app):
    create_model(testapp)
    create_version(testapp)
    create_version(testapp)
    with modelreg_app.registry["db_engine"].connect() as conn:
        assert conn.execute(sa.text("SELECT next_version FROM models")).scalar() == 3
