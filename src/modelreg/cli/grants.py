"""``modelreg grants``: levels on models (by name or glob) for principals and groups."""

from __future__ import annotations

import click

from ..security.services import GROUP_PREFIX, SecurityService
from . import assemble, cli_actor, db_session, each_page, ini_argument


@click.group()
def grants() -> None:
    """Manage grants: read < write < admin on the models a pattern matches."""


@grants.command("add")
@click.argument("subject")
@click.argument("pattern")
@click.argument("level", type=click.Choice(["read", "write", "admin"]))
@ini_argument
def add(subject: str, pattern: str, level: str, config_uri: str) -> None:
    """Grant LEVEL on the models PATTERN matches (a name or a glob such as 'fraud-*') to
    SUBJECT: a principal's name, or group:<name>."""
    registry = assemble(config_uri)
    group = subject[len(GROUP_PREFIX):] if subject.startswith(GROUP_PREFIX) else None
    with db_session(registry) as db:
        grant = SecurityService(db, actor=cli_actor()).create_grant(
            pattern=pattern, level=level, principal=None if group else subject, group=group
        )
        grant_id, stored = grant.id, grant.pattern
    click.echo(f"grant {grant_id}: {level} on {stored!r} to {subject}")


@grants.command("list")
@ini_argument
def list_(config_uri: str) -> None:
    """List grants."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        service = SecurityService(db, actor=cli_actor())
        rows = [service.grant_json(g)
                for g in each_page(lambda token: service.list_grants(page_token=token))]
    for row in rows:
        subject = row["principal"] or GROUP_PREFIX + row["group"]
        click.echo(f"{row['id']:>6}  {subject:<32} {row['level']:<6} {row['pattern']}")


@grants.command()
@click.argument("grant_id", metavar="ID")
@ini_argument
def remove(grant_id: str, config_uri: str) -> None:
    """Delete the grant ID."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).delete_grant(grant_id)
    click.echo(f"grant {grant_id} deleted")
