"""``modelreg db``: database migrations."""

from __future__ import annotations

import click
from alembic import command

from ..migrations import alembic_config
from . import ini_argument, load


@click.group()
def db() -> None:
    """Manage the registry's database schema."""


@db.command()
@ini_argument
@click.option("--revision", default="heads", show_default=True, help="Target revision.")
def upgrade(config_uri: str, revision: str) -> None:
    """Bring the database to the newest schema (core and plugins)."""
    settings, pm = load(config_uri)
    command.upgrade(alembic_config(settings, pm.hook), revision)
    click.echo(f"database upgraded to {revision}")


@db.command()
@ini_argument
def current(config_uri: str) -> None:
    """Show the database's current revision(s)."""
    settings, pm = load(config_uri)
    command.current(alembic_config(settings, pm.hook))
