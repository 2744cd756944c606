"""Throttling of failed authentication: per client address, in the database, on every backend.

The app here blocks a client after 3 failures within 60 seconds for 60 seconds; time is moved
by editing the ``auth_failures`` row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import webtest

from helpers import API, error_code
from modelreg.models import AuthFailure, utcnow
from modelreg.security.throttle import Throttle
from modelreg.testing import clear_database, make_app
from openapi_checking import CheckedTestApp
from security_helpers import add_principal, bearer, public_id, security_service

MAX_FAILURES = 3
ATTACKER = "198.51.100.1"
BYSTANDER = "198.51.100.2"
BAD = bearer("mr_0123456789abcdef_" + "x" * 43)


def _settings(url: str, **extra: str) -> dict[str, str]:
    return {"sqlalchemy.url": url, "modelreg.auth.anonymous": "none",
            "modelreg.auth.max_failures": str(MAX_FAILURES),
            "modelreg.auth.failure_window": "60", "modelreg.auth.block_seconds": "60",
            **extra}


@pytest.fixture(scope="module")
def throttled_wsgi_app(modelreg_database) -> Iterator[Any]:
    app = make_app(_settings(modelreg_database.url))
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def app(throttled_wsgi_app, openapi_checker) -> Iterator[CheckedTestApp]:
    test = CheckedTestApp(throttled_wsgi_app, extra_environ={"REMOTE_ADDR": ATTACKER})
    test.checker = openapi_checker
    yield test
    clear_database(throttled_wsgi_app.registry["db_engine"])


@pytest.fixture
def token(app) -> str:
    return add_principal(app.app, "alice", grants=[("*", "write")])


def _fail(app: Any, times: int = 1, **kwargs: Any) -> None:
    for _ in range(times):
        response = app.get(f"{API}/models", headers=BAD, status=401, **kwargs)
        assert error_code(response) == "invalid_token"


def _blocked(app: Any, headers: dict[str, str], **kwargs: Any) -> int:
    """Assert the request is refused as throttled; returns its Retry-After."""
    response = app.get(f"{API}/models", headers=headers, status=429, **kwargs)
    assert error_code(response) == "too_many_failures"
    assert response.content_type == "application/json"
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= 60
    assert response.json["error"]["details"]["retry_after"] == retry_after
    return retry_after


def _move_time(app: Any, client: str, seconds: float) -> None:
    """Move the client's window and block ``seconds`` into the past."""
    delta = dt.timedelta(seconds=seconds)
    with app.app.registry["db_writer_engine"].begin() as conn:
        row = conn.execute(sa.select(AuthFailure.__table__)
                           .where(AuthFailure.client == client)).one()
        conn.execute(sa.update(AuthFailure).where(AuthFailure.client == client).values(
            window_started_at=row.window_started_at - delta,
            blocked_until=row.blocked_until - delta if row.blocked_until else None,
        ))


def test_blocked_after_n_failures_even_with_a_valid_token(app, token):
    _fail(app, MAX_FAILURES - 1)
    app.get(f"{API}/models", headers=bearer(token), status=200)  # a success resets nothing
    _fail(app)
    _blocked(app, bearer(token))
    _blocked(app, BAD)
    # Writes too, and the admin API: every request with credentials.
    response = app.post_json(f"{API}/models", {"name": "m"}, headers=bearer(token),
                             status=429)
    assert error_code(response) == "too_many_failures" and "Retry-After" in response.headers
    # Without credentials nothing is looked up: the usual 401 (and public routes work).
    app.get(f"{API}/models", status=401)
    app.get("/healthz", status=200)


def test_other_clients_are_not_affected(app, token):
    _fail(app, MAX_FAILURES)
    _blocked(app, bearer(token))
    other = {"REMOTE_ADDR": BYSTANDER}
    app.get(f"{API}/models", headers=bearer(token), extra_environ=other, status=200)
    _fail(app, MAX_FAILURES - 1, extra_environ=other)
    app.get(f"{API}/models", headers=bearer(token), extra_environ=other, status=200)
    # The bystander's successes do not unblock the attacker either.
    _blocked(app, bearer(token))


def test_forwarded_for_headers_do_not_change_the_client(app, token):
    for n in range(MAX_FAILURES):
        app.get(f"{API}/models", headers={**BAD, "X-Forwarded-For": f"10.0.0.{n}"},
                status=401)
    _blocked(app, {**bearer(token), "X-Forwarded-For": "10.9.9.9"})


def test_unblocked_when_the_time_has_passed(app, token):
    _fail(app, MAX_FAILURES)
    assert _blocked(app, bearer(token)) > 50
    _move_time(app, ATTACKER, 30)
    assert _blocked(app, bearer(token)) <= 30
    _move_time(app, ATTACKER, 31)
    app.get(f"{API}/models", headers=bearer(token), status=200)
    # The count started again: it takes MAX_FAILURES new failures to be blocked again.
    _fail(app, MAX_FAILURES - 1)
    app.get(f"{API}/models", headers=bearer(token), status=200)
    _fail(app)
    _blocked(app, bearer(token))


def test_failures_outside_the_window_do_not_add_up(app, token):
    _fail(app, MAX_FAILURES - 1)
    _move_time(app, ATTACKER, 61)
    _fail(app, MAX_FAILURES - 1)
    app.get(f"{API}/models", headers=bearer(token), status=200)
    _fail(app)
    _blocked(app, bearer(token))


def test_every_kind_of_refused_credential_counts(app, token):
    revoked = add_principal(app.app, "bob")
    with security_service(app.app) as security:
        security.revoke_token(public_id(revoked))
    response = app.get(f"{API}/models", headers=bearer(revoked), status=401)
    assert error_code(response) == "token_revoked"
    response = app.get(f"{API}/models", headers={"Authorization": "Bearer mr_garbage"},
                       status=401)
    assert error_code(response) == "malformed_token"
    response = app.get(f"{API}/models", headers={"Authorization": "Basic YWxpY2U6cHc="},
                       status=401)
    assert error_code(response) == "invalid_authorization"
    _blocked(app, bearer(token))


def test_the_block_holds_across_processes(app, token, modelreg_database):
    """A second app over the same database (another process, as far as the database can
    tell) sees the block the first one recorded."""
    _fail(app, MAX_FAILURES)
    other = make_app(_settings(modelreg_database.url))
    try:
        second = webtest.TestApp(other, extra_environ={"REMOTE_ADDR": ATTACKER})
        response = second.get(f"{API}/models", headers=bearer(token), status=429)
        assert error_code(response) == "too_many_failures"
    finally:
        other.registry["db_engine"].dispose()


def test_the_row_records_the_block(app, token):
    _fail(app, MAX_FAILURES)
    with app.app.registry["db_engine"].connect() as conn:
        rows = conn.execute(sa.select(AuthFailure.__table__)).all()
    assert [row.client for row in rows] == [ATTACKER]
    blocked_until = rows[0].blocked_until
    assert dt.timedelta(seconds=55) < blocked_until - utcnow() <= dt.timedelta(seconds=60)


def test_throttling_can_be_switched_off(modelreg_database):
    wsgi = make_app(_settings(modelreg_database.url, **{"modelreg.auth.max_failures": "0"}))
    try:
        test = webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": ATTACKER})
        for _ in range(MAX_FAILURES * 2):
            test.get(f"{API}/models", headers=BAD, status=401)
        with wsgi.registry["db_engine"].connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(AuthFailure)).scalar() \
                == 0
    finally:
        clear_database(wsgi.registry["db_engine"])
        wsgi.registry["db_engine"].dispose()


def test_defaults_and_bad_settings():
    throttle = Throttle.from_settings({})
    assert (throttle.max_failures, throttle.window.total_seconds(),
            throttle.block.total_seconds()) == (10, 60, 60)
    for key, value in (("modelreg.auth.max_failures", "-1"),
                       ("modelreg.auth.max_failures", "ten"),
                       ("modelreg.auth.failure_window", "0"),
                       ("modelreg.auth.block_seconds", "1.5")):
        with pytest.raises(RuntimeError, match=re.escape(key)):
            Throttle.from_settings({key: value})
