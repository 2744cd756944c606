"""MLflow's filter language, comparisons, paging and error codes as the plugin reads and
writes them (plugins/modelreg-mlflow/src/modelreg_mlflow/protocol.py)."""

from __future__ import annotations

import pytest
from modelreg_mlflow.protocol import (
    MlflowError,
    compare,
    error_code_of,
    page,
    parse_filter,
)

from modelreg.api import ApiError, Conflict, Forbidden, NotFound, Unauthorized


def test_filters_the_client_sends_are_parsed() -> None:
    # What search_registered_models adds to every filter in MLflow 3.
    assert parse_filter("name LIKE 'team-%' AND tag.`mlflow.prompt.is_prompt` != 'true'") \
        == [("name", "LIKE", "team-%"), ("tag.mlflow.prompt.is_prompt", "!=", "true")]
    assert parse_filter("tags.owner = \"ml\" and version_number >= 2 AND run_id IN ('a', 'b')") \
        == [("tags.owner", "=", "ml"), ("version_number", ">=", 2),
            ("run_id", "IN", ["a", "b"])]
    assert parse_filter("name NOT IN ('x')") == [("name", "NOT IN", ["x"])]
    assert parse_filter("  ") == []


@pytest.mark.parametrize("text", ["name LIKE", "name ~ 'x'", "name = 'x' OR name = 'y'",
                                  "= 'x'", "name IN 'x'"])
def test_broken_filters_are_invalid_parameter_values(text: str) -> None:
    with pytest.raises(MlflowError) as caught:
        parse_filter(text)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.status == 400


def test_comparisons() -> None:
    assert compare("team-demo", "LIKE", "team-%")
    assert not compare("Team-demo", "LIKE", "team-%")
    assert compare("Team-demo", "ILIKE", "team-%")
    assert compare("a_b", "LIKE", "a\\_b") is False  # MLflow's LIKE has no escapes
    assert compare("3", ">", 2) and not compare("1", ">", 2)
    assert compare(None, "!=", "x") and not compare(None, "=", "x")
    assert compare("b", "NOT IN", ["a"]) and not compare("a", "NOT IN", ["a"])


def test_pages_carry_an_opaque_offset() -> None:
    items = list(range(5))
    first, token = page(items, {"max_results": 2})
    assert first == [0, 1] and token
    second, token = page(items, {"max_results": 2, "page_token": token})
    third, last = page(items, {"max_results": 2, "page_token": token})
    assert (second, third, last) == ([2, 3], [4], None)
    with pytest.raises(MlflowError):
        page(items, {"page_token": "garbage"})
    with pytest.raises(MlflowError):
        page(items, {"max_results": 0})


def test_core_errors_map_to_mlflow_codes() -> None:
    assert error_code_of(NotFound("x", code="model_not_found")) == "RESOURCE_DOES_NOT_EXIST"
    assert error_code_of(ApiError("x", code="not_found", status=404)) == "ENDPOINT_NOT_FOUND"
    assert error_code_of(Conflict("x", code="model_exists")) == "RESOURCE_ALREADY_EXISTS"
    assert error_code_of(Conflict("x", code="version_has_aliases")) == "INVALID_STATE"
    assert error_code_of(Unauthorized("x")) == "UNAUTHENTICATED"
    assert error_code_of(Forbidden("x")) == "PERMISSION_DENIED"
    assert error_code_of(ApiError("x", code="validation_failed", status=422)) == \
        "INVALID_PARAMETER_VALUE"
