"""``modelreg users``: principals, the people and service accounts that hold tokens."""

from __future__ import annotations

import json

import click

from ..security.services import SecurityService
from . import assemble, cli_actor, db_session, each_page, ini_argument


@click.group()
def users() -> None:
    """Manage principals: people and service accounts."""


@users.command("add")
@click.argument("name")
@ini_argument
@click.option("--admin", is_flag=True, help="A global admin: may do everything.")
@click.option("--service", is_flag=True, help="A service account rather than a person.")
def add(name: str, config_uri: str, admin: bool, service: bool) -> None:
    """Create the principal NAME."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).create_principal(
            name, kind="service" if service else "user", is_admin=admin
        )
    click.echo(f"principal {name} created" + (" (global admin)" if admin else ""))


@users.command("list")
@ini_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(config_uri: str, as_json: bool) -> None:
    """List principals."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        service = SecurityService(db, actor=cli_actor())
        rows = [
            service.principal_json(p)
            for p in each_page(lambda token: service.list_principals(page_token=token))
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        flags = [row["kind"]]
        flags += ["admin"] if row["is_admin"] else []
        flags += ["disabled"] if row["disabled"] else []
        groups = f"  groups: {', '.join(row['groups'])}" if row["groups"] else ""
        click.echo(f"{row['name']:<32} {' '.join(flags)}{groups}")


def _set_disabled(name: str, config_uri: str, disabled: bool) -> None:
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).update_principal(name, disabled=disabled)
    click.echo(f"principal {name} {'disabled' if disabled else 'enabled'}")


@users.command()
@click.argument("name")
@ini_argument
def disable(name: str, config_uri: str) -> None:
    """Disable the principal NAME: its tokens stop working at once."""
    _set_disabled(name, config_uri, True)


@users.command()
@click.argument("name")
@ini_argument
def enable(name: str, config_uri: str) -> None:
    """Enable the principal NAME again."""
    _set_disabled(name, config_uri, False)
