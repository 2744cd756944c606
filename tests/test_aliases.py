"""Aliases: set, move, resolve, delete, history; only ready versions; name rules."""

from __future__ import annotations

import pytest

from helpers import API, create_model, create_version, error_code, ready_version

A = f"{API}/models/fraud-detector/aliases"


def test_set_move_resolve_delete_with_history(testapp):
    create_model(testapp)
    ready_version(testapp)
    ready_version(testapp)
    created = testapp.put_json(f"{A}/champion", {"version": 1}, status=201).json
    assert created["version"] == 1
    same = testapp.put_json(f"{A}/champion", {"version": 1}, status=200).json
    assert same["version"] == 1
    moved = testapp.put_json(f"{A}/champion", {"version": 2}, status=200).json
    assert moved["version"] == 2
    assert testapp.get(f"{A}/champion").json["version"] == 2
    assert testapp.get(f"{API}/models/fraud-detector").json["aliases"] == {"champion": 2}
    assert testapp.get(f"{API}/models/fraud-detector/versions/2").json["aliases"] == ["champion"]
    assert [a["alias"] for a in testapp.get(A).json["aliases"]] == ["champion"]
    testapp.delete(f"{A}/champion", status=204)
    response = testapp.get(f"{A}/champion", status=404)
    assert error_code(response) == "alias_not_found"
    history = testapp.get(f"{A}/champion/history").json["history"]
    assert [(h["from_version"], h["to_version"]) for h in history] == [
        (2, None), (1, 2), (None, 1)]


def test_an_unknown_alias_is_answered_with_the_aliases_that_exist(testapp):
    create_model(testapp)
    ready_version(testapp)
    testapp.put_json(f"{A}/staging", {"version": 1}, status=201)
    testapp.put_json(f"{A}/champion", {"version": 1}, status=201)
    for path, code in [(f"{API}/models/fraud-detector/versions/champoin", "version_not_found"),
                       (f"{A}/champoin", "alias_not_found"),
                       (f"{A}/champoin/history", "alias_not_found")]:
        error = testapp.get(path, status=404).json["error"]
        assert error["code"] == code
        assert error["details"]["aliases"] == ["champion", "staging"]
        assert "champion, staging" in error["message"]
    # A number or a digest is no alias: nothing to list.
    error = testapp.get(f"{API}/models/fraud-detector/versions/7", status=404).json["error"]
    assert "aliases" not in error["details"]


def test_history_pages(testapp):
    create_model(testapp)
    for _ in range(3):
        ready_version(testapp)
    for number in (1, 2, 3, 1):
        testapp.put_json(f"{A}/champion", {"version": number})
    page = testapp.get(f"{A}/champion/history", {"page_size": 3}).json
    assert len(page["history"]) == 3
    rest = testapp.get(f"{A}/champion/history",
                       {"page_size": 3, "page_token": page["next_page_token"]}).json
    assert [(h["from_version"], h["to_version"]) for h in rest["history"]] == [(None, 1)]
    assert rest["next_page_token"] is None
    testapp.get(f"{A}/never/history", status=404)


def test_aliases_point_only_at_ready_versions(testapp):
    create_model(testapp)
    create_version(testapp)
    response = testapp.put_json(f"{A}/champion", {"version": 1}, status=409)
    assert error_code(response) == "version_not_ready"
    response = testapp.put_json(f"{A}/champion", {"version": 7}, status=404)
    assert error_code(response) == "version_not_found"
    testapp.get(f"{A}/champion", status=404)


@pytest.mark.parametrize("alias", ["42", "latest", "sha256:abc", "Champion", "-x", "a b", "a" * 65])
def test_alias_name_rules(testapp, alias):
    create_model(testapp)
    ready_version(testapp)
    response = testapp.put_json(f"{A}/{alias}", {"version": 1}, status=422)
    assert error_code(response) == "invalid_alias"


def test_alias_body_is_validated(testapp):
    create_model(testapp)
    for body in ({}, {"version": 0}, {"version": "one"}, {"version": 1, "extra": 1}):
        response = testapp.put_json(f"{A}/champion", body, status=422)
        assert error_code(response) == "invalid_body"
