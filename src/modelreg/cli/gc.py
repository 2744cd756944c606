"""``modelreg gc``: apply retention, then delete blobs no file references and stale upload
sessions."""

from __future__ import annotations

import datetime as dt

import click

from ..db import get_engine, get_session_factory
from ..files.gc import DEFAULT_GRACE, apply_retention_everywhere, collect_garbage
from ..storage import get_blob_store
from ..storage.errors import StorageError
from . import ini_argument, load


@click.command()
@ini_argument
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--grace", type=click.IntRange(min=0),
              default=int(DEFAULT_GRACE.total_seconds()), show_default=True,
              help="Seconds since a blob was last referenced before it may be deleted.")
@click.option("--no-retention", is_flag=True,
              help="Do not apply modelreg.policy.retention.* before collecting.")
def gc(config_uri: str, dry_run: bool, grace: int, no_retention: bool) -> None:
    """Apply retention (modelreg.policy.retention.*), then delete unreferenced blobs and
    expired upload sessions (safe while serving)."""
    settings, pm = load(config_uri)
    store = get_blob_store(settings, pm.hook)
    engine = get_engine(settings)
    done = {"archive": "archived", "delete": "deleted"}
    try:
        if not no_retention:
            factory = get_session_factory(engine)
            for item in apply_retention_everywhere(factory, engine, pm.hook, settings,
                                                   dry_run=dry_run):
                action = f"would {item['action']}" if dry_run else done[item["action"]]
                click.echo(f"retention: {action} version {item['version']} of "
                           f"{item['model']}")
        report = collect_garbage(get_session_factory(engine), engine, store,
                                 grace=dt.timedelta(seconds=grace), dry_run=dry_run)
    except StorageError as exc:
        raise click.ClickException(f"the blob store failed: {exc}") from exc
    except ValueError as exc:  # a wrong modelreg.policy.* setting
        raise click.ClickException(f"invalid policy setting: {exc}") from exc
    finally:
        engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    for upload in report.uploads:
        click.echo(f"{verb} upload session {upload}")
    for sha256, size in report.blobs:
        click.echo(f"{verb} blob sha256:{sha256} ({size} bytes)")
    click.echo(f"{verb} {len(report.blobs)} blob(s), {report.freed_bytes} bytes, and "
               f"{len(report.uploads)} upload session(s)")
