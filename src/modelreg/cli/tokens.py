"""``modelreg tokens``: API tokens, shown once when created."""

from __future__ import annotations

import json

import click

from ..security.services import MAX_TOKEN_DAYS, SecurityService
from . import assemble, cli_actor, db_session, each_page, ini_argument


@click.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.argument("name")
@ini_argument
@click.option("--scope", "scopes", multiple=True, default=("read",), show_default=True,
              help="read, write or admin, optionally ':<model pattern>' (write:fraud-*); "
                   "repeat for several.")
@click.option("--expires-in", "days", type=click.IntRange(1, MAX_TOKEN_DAYS),
              help="Days until the token expires (default: never).")
@click.option("--description", default="", help="What the token is for.")
def create(name: str, config_uri: str, scopes: tuple[str, ...], days: int | None,
           description: str) -> None:
    """Create a token for the principal NAME and print it (the only time it is shown)."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        row, token = SecurityService(db, actor=cli_actor()).create_token(
            name, scopes=scopes, expires_in_days=days, description=description
        )
        public_id, granted = row.public_id, row.scopes
    click.echo(f"token {public_id} for {name} (scopes: {granted}); store it now, it is not "
               "shown again:", err=True)
    click.echo(token)


@tokens.command("list")
@ini_argument
@click.option("--principal", help="Only this principal's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(config_uri: str, principal: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        service = SecurityService(db, actor=cli_actor())
        rows = [
            service.token_json(t)
            for t in each_page(
                lambda page: service.list_tokens(principal=principal, page_token=page)
            )
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else f"expires {row['expires_at'] or 'never'}"
        click.echo(f"{row['id']}  {row['principal']:<24} {' '.join(row['scopes']):<24} "
                   f"{state}  last used {row['last_used_at'] or 'never'}")


@tokens.command()
@click.argument("token_id", metavar="ID")
@ini_argument
def revoke(token_id: str, config_uri: str) -> None:
    """Revoke the token ID (its public id, as listed) for good."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        SecurityService(db, actor=cli_actor()).revoke_token(token_id)
    click.echo(f"token {token_id} revoked")
