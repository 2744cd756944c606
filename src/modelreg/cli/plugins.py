"""``modelreg plugins``: what is loaded."""

from __future__ import annotations

import json

import click

from ..plugins import describe_plugins, disabled_plugins
from . import ini_argument, load


@click.command()
@ini_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(config_uri: str, as_json: bool) -> None:
    """List the plugins the registry loads, with their versions and hooks."""
    settings, pm = load(config_uri)
    rows = describe_plugins(pm)
    for row in rows:
        plugin = pm.get_plugin(row["name"])
        row["hooks"] = sorted(
            caller.name for caller in pm.get_hookcallers(plugin) or ()
        )
    disabled = disabled_plugins(settings)
    if as_json:
        click.echo(json.dumps({"plugins": rows, "disabled": disabled}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<24} {row['distribution']} {row['version']}")
        click.echo(f"{'':<24} hooks: {', '.join(row['hooks']) or '-'}")
    for name in disabled:
        click.echo(f"{name:<24} disabled")
