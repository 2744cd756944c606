"""``modelreg plugins``: what is loaded."""

from __future__ import annotations

import json

import click

from ..plugins import describe_plugins, disabled_plugins
from ..storage import active_backend, backend_descriptions
from . import ini_argument, load


@click.command()
@ini_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(config_uri: str, as_json: bool) -> None:
    """List the plugins the registry loads, with their versions and hooks, and the storage
    backends they offer (by the name ``modelreg.storage`` selects; * marks the active one)."""
    settings, pm = load(config_uri)
    rows = describe_plugins(pm)
    for row in rows:
        plugin = pm.get_plugin(row["name"])
        row["hooks"] = sorted(
            caller.name for caller in pm.get_hookcallers(plugin) or ()
        )
    disabled = disabled_plugins(settings)
    active = active_backend(settings)
    backends = [{"name": d.name, "description": d.description, "active": d.name == active}
                for d in sorted(backend_descriptions(settings, pm.hook).values(),
                                key=lambda d: d.name)]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "disabled": disabled, "backends": backends,
                               "storage": active}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<24} {row['distribution']} {row['version']}")
        click.echo(f"{'':<24} hooks: {', '.join(row['hooks']) or '-'}")
    for name in disabled:
        click.echo(f"{name:<24} disabled")
    click.echo("storage backends (modelreg.storage = <name>):")
    for backend in backends:
        mark = "*" if backend["active"] else " "
        click.echo(f"{mark} {backend['name']:<22} {backend['description'] or '-'}")
    if not any(backend["active"] for backend in backends):
        click.echo(f"! {active:<22} selected but not installed")
