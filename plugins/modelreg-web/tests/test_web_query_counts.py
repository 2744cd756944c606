"""A bounded number of SQL statements per page (as tests/test_query_counts.py does for the
REST API): a listing or a page must not grow a query per row by accident.  Counted on the
app's engine, transaction control left out.  If a change needs more on purpose, raise the
budget here and say why in the commit."""

from __future__ import annotations

import pytest
from webui_support import World

from modelreg.testing import counting_statements

HTML = {"Accept": "text/html"}
#: Statements per page, at most (signed in: the session, the token's identity).
BUDGETS = {
    # session, token, grants...; one statement for the page of models
    # the session, the throttle, the token, the grants; then the page of models
    "/": 5,
    "/ui/models?q=fraud": 5,
    # ...the model (with tags, aliases, latest), its versions, their sizes (the model, one
    # aggregate), aliases, the card's version,
    # files and README; plus two per alias (its history: the model, the moves; at most 10
    # aliases are shown), counted below
    "/ui/models/fraud-detector": 20,
    "/ui/models/fraud-detector/versions/2": 7,
    # ...the model, both versions, both file lists, the version list
    "/ui/models/fraud-detector/compare?a=1&b=2": 18,
    "/ui/tokens": 6,
}
PER_ALIAS = {"/ui/models/fraud-detector": 2}


@pytest.mark.parametrize("path", list(BUDGETS))
def test_statements_per_page(world: World, path: str) -> None:
    browser = world.browser("bob")
    browser.get(path, headers=HTML)  # warm: the token's last use stamped
    with counting_statements(world.app.registry["db_engine"]) as statements:
        browser.get(path, headers=HTML, status=200)
    aliases = len(world.api("root").get("/api/v1/models/fraud-detector/aliases").json[
        "aliases"])
    budget = BUDGETS[path] + PER_ALIAS.get(path, 0) * min(aliases, 10)
    assert len(statements) <= budget, "\n".join(statements)
