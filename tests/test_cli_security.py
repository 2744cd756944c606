"""``modelreg users|tokens|groups|grants|audit`` end to end: a temporary ini and SQLite
database, the commands through click (and once through the installed console script), and
the tokens they make used against the app built from the same ini."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import plaster
import pytest
import sqlalchemy as sa
import webtest
from click.testing import CliRunner

from helpers import API, error_code
from modelreg.config import configure
from modelreg.models import ApiToken
from modelreg_client.cli import main
from security_helpers import bearer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    """development.ini over a fresh SQLite database in ``tmp_path``, migrated."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    text = (ROOT / "development.ini").read_text()
    text = text.replace("sqlite:///%(here)s/var/modelreg.sqlite", url)
    path = tmp_path / "registry.ini"
    path.write_text(text)
    run("db", "upgrade", str(path))
    return path


def run(*args: str, ok: bool = True) -> Any:
    """Run ``modelreg ARGS`` in-process; expects success unless ``ok`` is false."""
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


@pytest.fixture
def app(ini: Path) -> Any:
    """A WebTest app of the ini's deployment, closed to anonymous callers (development.ini
    lets them write, which would make every grant moot)."""
    settings = dict(plaster.get_settings(str(ini), "app:main"))
    settings["modelreg.auth.anonymous"] = "none"
    wsgi = configure(settings, load_entrypoints=True).make_wsgi_app()
    yield webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    wsgi.registry["db_engine"].dispose()


def test_users_add_list_disable_enable(ini, app):
    result = run("users", "add", "alice", str(ini), "--admin")
    assert "alice" in result.output and "admin" in result.output
    run("users", "add", "build-bot", str(ini), "--service")
    listed = {row["name"]: row for row in json.loads(run("users", "list", str(ini),
                                                         "--json").stdout)}
    assert set(listed) == {"alice", "build-bot"}
    assert listed["alice"]["is_admin"] and listed["alice"]["kind"] == "user"
    assert listed["build-bot"]["kind"] == "service" and not listed["build-bot"]["is_admin"]
    text = run("users", "list", str(ini)).stdout
    assert "alice" in text and "admin" in text and "build-bot" in text

    # A name taken, an invalid name: exit status 1, a clear message, nothing changed.
    result = run("users", "add", "alice", str(ini), ok=False)
    assert result.exit_code == 1 and "already exists" in result.output
    result = run("users", "add", "Not Valid", str(ini), ok=False)
    assert result.exit_code == 1 and "invalid principal name" in result.output

    # Disabling stops the principal's tokens at once, in the running app.
    token = run("tokens", "create", "alice", str(ini), "--scope", "admin").stdout.strip()
    app.get(f"{API}/admin/principals", headers=bearer(token), status=200)
    run("users", "disable", "alice", str(ini))
    response = app.get(f"{API}/admin/principals", headers=bearer(token), status=401)
    assert error_code(response) == "principal_disabled"
    assert json.loads(run("users", "list", str(ini), "--json").stdout)[0]["disabled"]
    assert "disabled" in run("users", "list", str(ini)).stdout
    run("users", "enable", "alice", str(ini))
    app.get(f"{API}/admin/principals", headers=bearer(token), status=200)
    result = run("users", "disable", "nobody", str(ini), ok=False)
    assert result.exit_code == 1 and "does not exist" in result.output


def test_tokens_create_list_revoke(ini, app, tmp_path):
    run("users", "add", "alice", str(ini))
    run("grants", "add", "alice", "fraud-*", "write", str(ini))
    result = run("tokens", "create", "alice", str(ini), "--scope", "write:fraud-*",
                 "--scope", "read", "--expires-in", "30", "--description", "laptop")
    # The token alone on stdout (for scripts), the advice on stderr.
    token = result.stdout.strip()
    assert token.startswith("mr_") and "\n" not in token
    assert "not shown again" in result.stderr
    public_id = token.split("_")[1]

    listed = json.loads(run("tokens", "list", str(ini), "--json").stdout)
    assert [(t["id"], t["principal"], t["scopes"], t["description"]) for t in listed] == [
        (public_id, "alice", ["write:fraud-*", "read"], "laptop")]
    expires = dt.datetime.fromisoformat(listed[0]["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    text = run("tokens", "list", str(ini), "--principal", "alice").stdout
    assert public_id in text and token.split("_", 2)[2] not in text

    # Only the hash is in the database.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(ApiToken.__table__)).one()
    finally:
        engine.dispose()
    assert token.split("_", 2)[2] not in str(tuple(row))

    # The token works within its scopes, then is refused at once once revoked.
    headers = bearer(token)
    app.post_json(f"{API}/models", {"name": "fraud-x"}, headers=headers, status=201)
    app.get(f"{API}/admin/principals", headers=headers, status=403)
    result = run("tokens", "revoke", public_id, str(ini))
    assert f"token {public_id} revoked" in result.output
    response = app.get(f"{API}/models/fraud-x", headers=headers, status=401)
    assert error_code(response) == "token_revoked"
    assert "revoked" in run("tokens", "list", str(ini)).stdout
    result = run("tokens", "revoke", "0123456789abcdef", str(ini), ok=False)
    assert result.exit_code == 1 and "does not exist" in result.output

    # Bad scopes and unknown principals are refused with a message.
    result = run("tokens", "create", "alice", str(ini), "--scope", "owner", ok=False)
    assert result.exit_code == 1 and "invalid scope" in result.output
    result = run("tokens", "create", "nobody", str(ini), ok=False)
    assert result.exit_code == 1 and "does not exist" in result.output


def test_groups_and_grants(ini, app):
    run("users", "add", "alice", str(ini))
    token = run("tokens", "create", "alice", str(ini), "--scope", "write").stdout.strip()
    run("groups", "add", "risk", str(ini))
    run("groups", "add-member", "risk", "alice", str(ini))
    assert "alice" in run("groups", "list", str(ini)).stdout
    granted = run("grants", "add", "group:risk", "Risk-*", "write", str(ini)).output
    assert "'risk-*'" in granted and "group:risk" in granted
    assert "group:risk" in run("grants", "list", str(ini)).stdout
    app.post_json(f"{API}/models", {"name": "risk-model"}, headers=bearer(token), status=201)
    run("groups", "remove-member", "risk", "alice", str(ini))
    app.post_json(f"{API}/models", {"name": "risk-two"}, headers=bearer(token), status=403)
    grant_id = run("grants", "add", "alice", "risk-two", "write", str(ini)).output.split()[1]
    app.post_json(f"{API}/models", {"name": "risk-two"}, headers=bearer(token), status=201)
    run("grants", "remove", grant_id.rstrip(":"), str(ini))
    response = app.delete(f"{API}/models/risk-two", headers=bearer(token), status=404)
    assert error_code(response) == "model_not_found"  # not even readable any more


def test_audit_command(ini, app):
    run("users", "add", "alice", str(ini), "--admin")
    token = run("tokens", "create", "alice", str(ini), "--scope", "admin").stdout.strip()
    public_id = token.split("_")[1]
    app.post_json(f"{API}/models", {"name": "fraud"}, headers=bearer(token), status=201)
    app.post_json(f"{API}/models", {"name": "fraud-2"}, headers=bearer(token), status=201)
    app.put_json(f"{API}/models/fraud/tags/team", {"value": "risk"}, headers=bearer(token))

    events = json.loads(run("audit", str(ini), "--json").stdout)
    assert [e["action"] for e in events] == ["model.tag_set", "model.created",
                                             "model.created", "token.created",
                                             "principal.created"]
    tag_set = events[0]
    assert (tag_set["actor"], tag_set["token_id"], tag_set["target"]) == (
        "alice", public_id, "fraud:team")
    assert tag_set["after"] == {"value": "risk"} and tag_set["client_addr"] == "127.0.0.1"
    assert events[-1]["actor"].startswith("cli:") and events[-1]["token_id"] is None

    def actions(*args: str) -> list[str]:
        return [e["action"] for e in json.loads(run("audit", str(ini), "--json",
                                                    *args).stdout)]

    assert actions("--model", "fraud") == ["model.tag_set", "model.created"]
    assert actions("--target", "fraud") == ["model.tag_set", "model.created",
                                            "model.created"]
    assert actions("--actor", "alice", "--action", "model.created") == ["model.created"] * 2
    assert actions("--target-type", "principal") == ["principal.created"]
    assert actions("--limit", "2") == ["model.tag_set", "model.created"]
    assert actions("--since", tag_set["at"]) == ["model.tag_set"]
    assert actions("--until", tag_set["at"]) == actions()[1:]
    assert actions("--since", "2999-01-01T00:00:00Z") == []

    text = run("audit", str(ini)).stdout.splitlines()
    assert len(text) == 5
    assert "alice" in text[0] and f"[token {public_id}]" in text[0]
    assert "model.tag_set" in text[0] and "fraud:team" in text[0] and "127.0.0.1" in text[0]
    assert '"after": {"value": "risk"}' in text[0]
    result = run("audit", str(ini), "--since", "yesterday", ok=False)
    assert result.exit_code == 1 and "invalid since" in result.output


def test_the_installed_console_script(ini, app):
    run("users", "add", "ops", str(ini), "--admin")
    exe = Path(sys.executable).parent / "modelreg"
    made = subprocess.run([str(exe), "tokens", "create", "ops", str(ini), "--scope", "admin"],
                          check=True, capture_output=True, text=True, env=dict(os.environ))
    token = made.stdout.strip()
    assert token.startswith("mr_") and "not shown again" in made.stderr
    body = app.get(f"{API}/admin/principals", headers=bearer(token)).json
    assert [p["name"] for p in body["principals"]] == ["ops"]
