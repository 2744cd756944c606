"""``modelreg audit``: the newest entries of the audit log."""

from __future__ import annotations

import json

import click

from ..registry.paging import MAX_PAGE_SIZE
from ..security.services import SecurityService
from . import cli_actor, db_session, ini_argument, load


@click.command()
@ini_argument
@click.option("--limit", type=click.IntRange(1, MAX_PAGE_SIZE), default=50, show_default=True,
              help="How many events, newest first.")
@click.option("--actor", help="Only this actor's changes.")
@click.option("--action", help="Only this action, e.g. model.created.")
@click.option("--target", help="Only targets starting with this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit(config_uri: str, limit: int, actor: str | None, action: str | None,
          target: str | None, as_json: bool) -> None:
    """Show the audit log, newest first."""
    settings, _ = load(config_uri)
    with db_session(settings) as db:
        rows, _next = SecurityService(db, actor=cli_actor()).list_audit(
            actor=actor, action=action, target=target, page_size=limit
        )
        events = [SecurityService.audit_json(event) for event in rows]
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    for event in events:
        token = f" [token {event['token_id']}]" if event["token_id"] else ""
        click.echo(f"{event['at']}  {event['actor'] or 'anonymous'}{token}  "
                   f"{event['action']}  {event['target']}")
