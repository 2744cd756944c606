"""``modelreg groups``: teams of principals; grants to a group apply to its members."""

from __future__ import annotations

import click

from ..security.services import SecurityService
from . import assemble, cli_actor, db_session, each_page, ini_argument


@click.group()
def groups() -> None:
    """Manage groups of principals."""


@groups.command("add")
@click.argument("name")
@ini_argument
def add(name: str, config_uri: str) -> None:
    """Create the group NAME."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).create_group(name)
    click.echo(f"group {name} created")


@groups.command("add-member")
@click.argument("group")
@click.argument("principal")
@ini_argument
def add_member(group: str, principal: str, config_uri: str) -> None:
    """Add PRINCIPAL to GROUP."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).add_member(group, principal)
    click.echo(f"{principal} is a member of {group}")


@groups.command("remove-member")
@click.argument("group")
@click.argument("principal")
@ini_argument
def remove_member(group: str, principal: str, config_uri: str) -> None:
    """Remove PRINCIPAL from GROUP."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).remove_member(group, principal)
    click.echo(f"{principal} removed from {group}")


@groups.command("list")
@ini_argument
def list_(config_uri: str) -> None:
    """List groups with their members."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        service = SecurityService(db, actor=cli_actor())
        rows = [service.group_json(g)
                for g in each_page(lambda token: service.list_groups(page_token=token))]
    for row in rows:
        click.echo(f"{row['name']:<32} {', '.join(row['members']) or '-'}")
