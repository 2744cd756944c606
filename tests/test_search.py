"""Search over REST: filters, ordering, cursor paging stable under inserts, bounds."""

from __future__ import annotations

from helpers import API, create_model, create_version, error_code, ready_version


def names(response) -> list[str]:
    return [m["name"] for m in response.json["models"]]


def seed(testapp):
    for name, team in [("fraud-a", "risk"), ("fraud-b", "risk"), ("Fraud-C", "ml"),
                       ("churn-a", "growth"), ("churn-b", None)]:
        create_model(testapp, name, tags={"team": team} if team else {})
    ready_version(testapp, "fraud-a")
    testapp.put_json(f"{API}/models/fraud-a/aliases/champion", {"version": 1})


def test_filters_on_models(testapp):
    seed(testapp)
    get = lambda f: names(testapp.get(f"{API}/models", {"filter": f}))  # noqa: E731
    assert get("name GLOB 'fraud-*'") == ["fraud-a", "fraud-b", "Fraud-C"]
    assert get("name LIKE 'churn%'") == ["churn-a", "churn-b"]
    assert get("name = 'FRAUD-a'") == ["fraud-a"]
    assert get("name IN ('churn-a', 'fraud-b')") == ["churn-a", "fraud-b"]
    assert get("tag.team = 'risk'") == ["fraud-a", "fraud-b"]
    assert get("tag.team IS NULL") == ["churn-b"]
    assert get("alias = 'champion'") == ["fraud-a"]
    assert get("alias IS NULL AND name GLOB 'fraud*'") == ["fraud-b", "Fraud-C"]
    assert get("(tag.team = 'ml' OR tag.team = 'growth') AND NOT name = 'churn-a'") == [
        "Fraud-C"]
    assert get("created >= '2000-01-01T00:00:00Z' AND updated < '2999-01-01'") == [
        "churn-a", "churn-b", "fraud-a", "fraud-b", "Fraud-C"]


def test_filters_on_versions(testapp):
    create_model(testapp, "m")
    create_version(testapp, "m", metadata={"framework": "pytorch", "metrics": {"auc": 0.8}})
    ready_version(testapp, "m", metadata={"framework": "sklearn", "metrics": {"auc": 0.95}},
                  tags={"stage": "prod"})
    url = f"{API}/models/m/versions"
    get = lambda f: [v["number"] for v in testapp.get(url, {"filter": f}).json["versions"]]  # noqa: E731
    assert get("metadata.metrics.auc > 0.9") == [2]
    assert get("metadata.framework = 'pytorch'") == [1]
    assert get("status = 'draft'") == [1]
    assert get("tag.stage = 'prod' AND status IN ('ready')") == [2]
    assert get("number >= 1") == [2, 1]


def test_bad_filters_are_400_with_position(testapp):
    create_model(testapp)
    for text in ("nmae = 'x'", "name = ", "name = 'x' AND", "(name = 'x'", "status = 'x'",
                 "name = 'x' " + "OR name = 'y' " * 200):
        response = testapp.get(f"{API}/models", {"filter": text}, status=400)
        assert error_code(response) == "invalid_filter"
        assert "position" in response.json["error"]["details"]
    response = testapp.get(f"{API}/models/fraud-detector/versions",
                           {"filter": "status = 'bogus'"}, status=400)
    assert error_code(response) == "invalid_filter"


def test_page_size_and_order_bounds(testapp):
    for size in ("0", "1001", "-1", str(10**9)):
        response = testapp.get(f"{API}/models", {"page_size": size}, status=422)
        assert error_code(response) == "invalid_page_size"
    for size in ("many", "1e3", "1.5", "\uff11"):
        response = testapp.get(f"{API}/models", {"page_size": size}, status=400)
        assert error_code(response) == "invalid_page_size"
    response = testapp.get(f"{API}/models", {"order_by": "colour"}, status=400)
    assert error_code(response) == "invalid_order_by"
    response = testapp.get(f"{API}/models", {"page_token": "garbage"}, status=400)
    assert error_code(response) == "invalid_page_token"


def test_paging_is_stable_under_inserts(testapp):
    for i in range(10):
        create_model(testapp, f"m-{i:02d}")
    first = testapp.get(f"{API}/models", {"page_size": 4}).json
    assert names_of(first) == ["m-00", "m-01", "m-02", "m-03"]
    # Models inserted before and after the cursor do not shift the pages.
    create_model(testapp, "m-00a")
    create_model(testapp, "m-99")
    seen = names_of(first)
    token = first["next_page_token"]
    while token:
        page = testapp.get(f"{API}/models", {"page_size": 4, "page_token": token}).json
        seen += names_of(page)
        token = page["next_page_token"]
    assert seen == [f"m-{i:02d}" for i in range(10)] + ["m-99"]
    # A token only works for the query it came from.
    response = testapp.get(f"{API}/models", {"page_size": 4, "filter": "name GLOB 'm*'",
                                            "page_token": first["next_page_token"]}, status=400)
    assert error_code(response) == "invalid_page_token"


def test_order_by_created_desc(testapp):
    for name in ("first", "second", "third"):
        create_model(testapp, name)
    ordered = names(testapp.get(f"{API}/models", {"order_by": "created desc", "page_size": 2}))
    assert ordered == ["third", "second"]


def names_of(page) -> list[str]:
    return [m["name"] for m in page["models"]]
