"""``modelreg audit``: the newest entries of the audit log."""

from __future__ import annotations

import json

import click

from ..paging import MAX_PAGE_SIZE
from ..security.services import SecurityService
from . import assemble, cli_actor, db_session, ini_argument


@click.command()
@ini_argument
@click.option("--limit", type=click.IntRange(1, MAX_PAGE_SIZE), default=50, show_default=True,
              help="How many events, newest first.")
@click.option("--actor", help="Only this actor's changes.")
@click.option("--action", help="Only this action, e.g. model.created.")
@click.option("--target", help="Only targets starting with this.")
@click.option("--target-type", help="Only targets of this type (model, version, alias, "
              "principal, token, ...).")
@click.option("--model", help="Only this model (exact name) and its versions, tags and "
              "aliases.")
@click.option("--since", help="Only changes at or after this ISO-8601 time.")
@click.option("--until", help="Only changes before this ISO-8601 time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one list).")
def audit(config_uri: str, limit: int, actor: str | None, action: str | None,
          target: str | None, target_type: str | None, model: str | None,
          since: str | None, until: str | None, as_json: bool) -> None:
    """Show the audit log, newest first."""
    registry = assemble(config_uri)
    with db_session(registry) as db:
        rows, _next = SecurityService(db, actor=cli_actor()).list_audit(
            actor=actor, action=action, target=target, target_type=target_type, model=model,
            since=since, until=until, page_size=limit,
        )
        events = [SecurityService.audit_json(event) for event in rows]
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    for event in events:
        token = f" [token {event['token_id']}]" if event["token_id"] else ""
        client = f" from {event['client_addr']}" if event["client_addr"] else ""
        change = {k: event[k] for k in ("before", "after") if event[k] is not None}
        click.echo(f"{event['at']}  {event['actor'] or 'anonymous'}{token}{client}  "
                   f"{event['action']}  {event['target']}"
                   + (f"  {json.dumps(change, sort_keys=True)}" if change else ""))
