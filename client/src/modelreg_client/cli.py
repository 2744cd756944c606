"""The ``modelreg`` command: a click group whose subcommands come from entry points.

Any installed distribution may add subcommands by declaring, in the ``modelreg.cli``
entry-point group, a name and a click command or group::

    [options.entry_points]
    modelreg.cli =
        db = modelreg.cli.db:db

A subcommand that fails to import is reported, not fatal: the rest of the command still works.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from . import __version__

CLI_ENTRYPOINT_GROUP = "modelreg.cli"


class EntryPointGroup(click.Group):
    """A click group that loads its subcommands lazily from an entry-point group."""

    def __init__(self, *args, entry_point_group: str = CLI_ENTRYPOINT_GROUP, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._entry_point_group = entry_point_group

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=self._entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._entry_points().get(cmd_name)
        if ep is None:
            return None
        try:
            return ep.load()
        except Exception as exc:  # a broken plugin must not break the whole command
            raise click.ClickException(
                f"subcommand {cmd_name!r} from {ep.value} failed to load: {exc}"
            ) from exc


@click.group(cls=EntryPointGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelreg")
def main() -> None:
    """modelreg: the model registry's command line."""
