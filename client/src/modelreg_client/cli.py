"""The ``modelreg`` command: the client's subcommands, and more from entry points.

The client's own commands (``login``, ``push``, ``pull``, ``ls``, ``show``, ``search``,
``alias``, ``tag``, ``rm``) talk to a server over its REST API.  Any installed distribution
may add subcommands by declaring, in the ``modelreg.cli`` entry-point group, a name and a
click command or group; the server distribution adds its admin commands that way::

    [options.entry_points]
    modelreg.cli =
        db = modelreg.cli.db:db

A subcommand that fails to import is reported, not fatal: the rest of the command still works.
A built-in command wins over an entry point of the same name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cache import Cache
from .client import Client
from .config import cache_dir as default_cache_dir
from .config import load_settings, offline_setting, retries_setting, save_settings
from .errors import ModelregError, NotFound, Unauthorized
from .refs import Ref, parse_ref
from .transfer import Progress, Puller
from .types import Finding, Model, PullResult, PushResult, Version

__all__ = ["CLI_ENTRYPOINT_GROUP", "EXIT_CODES", "EntryPointGroup", "main"]

CLI_ENTRYPOINT_GROUP = "modelreg.cli"

#: Exit statuses of the client's commands (``ModelregError.exit_code`` picks them).
EXIT_CODES = {
    0: "success",
    1: "any other failure (a local file that cannot be read or written, …)",
    2: "usage error: bad arguments or options, no server configured",
    3: "not found: no such model, version, alias, tag or file",
    4: "permission denied, or missing/invalid token",
    5: "conflict or invalid request (also: a version rejected by validation)",
    6: "network or server failure, or bytes that failed verification",
    7: "pull: a file's path cannot be written here (named in the message); nothing written",
    130: "interrupted (Ctrl-C): run the same command again to resume a push or pull",
    141: "standard output was closed early (`| head`): the rest was not printed",
}


class EntryPointGroup(click.Group):
    """A click group that loads its subcommands lazily from an entry-point group."""

    def __init__(self, *args: Any, entry_point_group: str = CLI_ENTRYPOINT_GROUP,
                 **kwargs: Any) -> None:
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


def _exit_codes_help() -> str:
    lines = ["\b", "Exit status of the client's commands:"]
    lines += [f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()]
    return "\n".join(lines)


@click.group(cls=EntryPointGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_exit_codes_help())
@click.version_option(__version__, prog_name="modelreg")
@click.option("--url", metavar="URL",
              help="The registry's URL (default: $MODELREG_URL, else the one `login` stored).")
@click.option("--token", metavar="TOKEN",
              help="API token (default: $MODELREG_TOKEN, else the one `login` stored).")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None) -> None:
    """modelreg: the model registry's command line.

    Log in once with `modelreg login URL`; then push a directory as a new version
    (`modelreg push ./model --model fraud-detector --alias staging`) and pull any version
    back (`modelreg pull fraud-detector@staging ./model`).  Refs name versions as
    MODEL/3, MODEL@ALIAS, MODEL@latest or MODEL@sha256:DIGEST.
    """
    ctx.obj = {"url": url, "token": token}


# ------------------------------------------------------------------------- plumbing


def _client(ctx: click.Context) -> Client:
    """A client of the configured server: options, then environment, then config file."""
    try:
        settings = load_settings()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    options = ctx.find_root().obj or {}
    url = options.get("url") or settings.url
    token = options.get("token") or settings.token
    if not url:
        raise click.UsageError(
            "no registry configured: run `modelreg login URL`, or set MODELREG_URL")
    _check_url(url, "--url" if options.get("url") else "MODELREG_URL")
    client = Client(url, token, retries=settings.retries)
    ctx.call_on_close(client.close)
    return client


def client_command(group: click.Group, name: str | None = None, **kwargs: Any) -> Callable:
    """Declare a client subcommand of ``group`` whose failures become messages and exit
    statuses (:data:`EXIT_CODES`), never tracebacks."""

    def decorate(function: Callable) -> click.Command:
        @functools.wraps(function)
        def run(*args: Any, **params: Any) -> Any:
            as_json = bool(params.get("as_json"))
            try:
                return function(*args, **params)
            except ModelregError as exc:
                _fail(exc.message if as_json else _describe(exc), exc.exit_code, as_json,
                      exc.code or "error", exc.details)
            except KeyboardInterrupt:
                _fail("interrupted; run the same command again to resume", 130, as_json,
                      "interrupted")
            except BrokenPipeError:
                _closed_pipe()
            except click.ClickException as exc:
                if not as_json:
                    raise
                _fail(exc.format_message(), exc.exit_code, as_json, "usage_error")
            except (OSError, ValueError) as exc:
                _fail(str(exc), 1, as_json, "local_error")
        return group.command(name, **kwargs)(run)

    return decorate


def _closed_pipe() -> None:
    """Standard output was closed (``modelreg ls | head``): stop quietly, status 141.

    What is still buffered would fail again when Python flushes it at exit, so standard output
    is pointed at the null device first.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test runner's buffer)
        pass
    click.get_current_context().exit(141)


def _describe(exc: ModelregError) -> str:
    message = exc.message
    if exc.code and exc.status is not None:
        message += f" [{exc.code}]"
    if isinstance(exc, Unauthorized):
        message += "\nhint: check the token (`modelreg login URL`, or MODELREG_TOKEN)"
    details = exc.details if isinstance(exc.details, dict) else {}
    for problem in details.get("problems") or []:
        if isinstance(problem, dict):
            where = f" ({problem['field']})" if problem.get("field") else ""
            message += f"\n  - {problem.get('code', '')}: {problem.get('message', '')}{where}"
    for finding in details.get("findings") or []:
        if isinstance(finding, dict):
            message += (f"\n  - [{finding.get('severity', '')}] {finding.get('path', '')}: "
                        f"{finding.get('code', '')}: {finding.get('message', '')}")
    return message


def _fail(message: str, exit_code: int, as_json: bool = False, code: str = "error",
          details: Any = None) -> None:
    """Report an error on standard error (as one JSON object with ``--json``) and exit."""
    if as_json:
        error = {"code": code, "message": message,
                 "details": details if isinstance(details, dict) else {},
                 "exit_code": exit_code}
        click.echo(json.dumps({"error": error}, ensure_ascii=False), err=True)
    else:
        click.echo(f"Error: {message}", err=True)
    click.get_current_context().exit(exit_code)


def _check_url(url: str, hint: str) -> str:
    """``url`` if it is an http(s) URL with a host; a usage error (exit 2) otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(
            f"{url!r} is not a URL: give the scheme and host, e.g. http://localhost:6543",
            param_hint=hint)
    return url


def _ref(text: str) -> Ref:
    try:
        return parse_ref(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from exc


def _pairs(values: Iterable[str], what: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: use KEY=VALUE", param_hint=what)
        result[key] = val
    return result


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# ------------------------------------------------------------------------- progress


class BarProgress(Progress):
    """Progress bars (rich) on the terminal: one for the whole phase, one per active file."""

    LABELS = {"hash": "hashing", "upload": "uploading", "download": "downloading"}

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bars

        self._bars = Bars(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self._total: dict[str, Any] = {}
        self._files: dict[tuple[str, str], Any] = {}
        self._done: dict[tuple[str, str], int] = {}

    def begin(self, kind: str, files: int, total: int) -> None:
        if not self._bars.live.is_started:
            self._bars.start()
        self._total[kind] = self._bars.add_task(
            f"{self.LABELS.get(kind, kind)} {files} file(s)", total=total)

    def start(self, kind: str, path: str, size: int, done: int = 0) -> None:
        key = (kind, path)
        before = self._done.get(key, 0)
        self._done[key] = done
        if kind in self._total:
            self._bars.advance(self._total[kind], done - before)
        if key not in self._files and size >= 8 * 1024 * 1024:
            name = path if len(path) <= 40 else "…" + path[-39:]
            self._files[key] = self._bars.add_task(f"  {name}", total=size, completed=done)
        elif key in self._files:
            self._bars.update(self._files[key], completed=done)

    def advance(self, kind: str, path: str, nbytes: int) -> None:
        key = (kind, path)
        self._done[key] = self._done.get(key, 0) + nbytes
        if kind in self._total:
            self._bars.advance(self._total[kind], nbytes)
        if key in self._files:
            self._bars.advance(self._files[key], nbytes)

    def finish(self, kind: str, path: str) -> None:
        task = self._files.pop((kind, path), None)
        if task is not None:
            self._bars.remove_task(task)

    def end(self, kind: str) -> None:
        task = self._total.pop(kind, None)
        if task is not None:
            self._bars.remove_task(task)

    def notice(self, message: str) -> None:
        self._bars.console.print(f"note: {message}", markup=False, highlight=False)

    def close(self) -> None:
        """Take the bars off the terminal."""
        if self._bars.live.is_started:
            self._bars.stop()


class NoticeProgress(Progress):
    """No bars (not on a terminal, or --json): notices still go to standard error."""

    def notice(self, message: str) -> None:
        click.echo(f"note: {message}", err=True)

    def close(self) -> None:
        """Nothing to take down."""


def _progress(as_json: bool, quiet: bool) -> BarProgress | NoticeProgress | None:
    """Bars only for a person watching: stdout and stderr on a terminal, no --json;
    otherwise only notices, on standard error (none with --quiet)."""
    if quiet:
        return None
    if as_json or not (sys.stdout.isatty() and sys.stderr.isatty()):
        return NoticeProgress()
    return BarProgress()


# ---------------------------------------------------------------------------- login


@client_command(main)
@click.argument("url")
@click.option("--token", "token_option", metavar="TOKEN",
              help="The API token (asked for, hidden, when not given; empty for anonymous "
                   "access).")
@click.pass_context
def login(ctx: click.Context, url: str, token_option: str | None) -> None:
    """Check a token against the registry at URL and store both for later commands.

    They go to ~/.config/modelreg/config.toml (or $XDG_CONFIG_HOME/modelreg/config.toml, or
    $MODELREG_CONFIG), readable by you only.  MODELREG_URL and MODELREG_TOKEN override them.
    """
    _check_url(url, "URL")
    token = token_option
    if token is None:
        token = click.prompt("API token (empty for anonymous access)", hide_input=True,
                             default="", show_default=False)
    token = token.strip() or None
    # Not load_settings(): a broken config file must not stop the login that replaces it.
    with Client(url, token, retries=retries_setting()) as client:
        client.health()
        next(iter(client.list_models(page_size=1)), None)
    path = save_settings(url, token)
    who = "with the token" if token else "anonymously"
    click.echo(f"Logged in to {url} {who}; settings stored in {path}")


@client_command(main)
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Show who the registry takes you for: principal, token scopes and grants."""
    client = _client(ctx)
    me = client.whoami()
    if as_json:
        _echo_json({"url": client.url, **me})
        return
    who = me["principal"] or "anonymous"
    click.echo(f"{who} at {client.url}" + (" (global admin)" if me["is_admin"] else ""))
    if me["token"]:
        click.echo(f"token     {me['token']}  scopes: {', '.join(me['scopes'] or []) or '-'}")
    for grant in me["grants"]:
        click.echo(f"grant     {grant['level']} on {grant['pattern']}")
    click.echo(f"anonymous {me['anonymous']}")


# ---------------------------------------------------------------------- push / pull


@client_command(main)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", required=True, help="The model to push a version of "
              "(created if missing).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="A tag of the new version; repeat for several.")
@click.option("--metadata", "metadata_file", type=click.File("r", encoding="utf-8"),
              help="A JSON file with the version's metadata (framework, metrics, …).")
@click.option("--lineage", "lineage", multiple=True, metavar="KEY=VALUE",
              help="A lineage field of the new version (run_id, source_commit, "
                   "parent_version, …); repeat for several.")
@click.option("--description", default="", help="The version's description.")
@click.option("--alias", help="Point this alias at the version once it is ready.")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Files uploaded at once, and parts of one large file at once.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Leave out files matching this gitignore-style pattern; repeat for several.")
@click.option("--include", "includes", multiple=True, metavar="PATTERN",
              help="Push only files matching this gitignore-style pattern; repeat for several.")
@click.option("--wait", type=click.FloatRange(0), default=600, show_default=True,
              metavar="SECONDS", help="How long to wait for the server's scanners to make "
              "the version ready.")
@click.option("--verbose", "-v", is_flag=True, help="List the files that were left out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@click.pass_context
def push(ctx: click.Context, directory: Path, model: str, tags: tuple[str, ...],
         metadata_file: Any, lineage: tuple[str, ...], description: str, alias: str | None,
         parallel: int,
         excludes: tuple[str, ...], includes: tuple[str, ...], wait: float, verbose: bool,
         quiet: bool, as_json: bool) -> None:
    """Push every file under DIRECTORY as a new version of a model.

    Left out: .git/, __pycache__/, *.pyc, .DS_Store and editor swap files, the patterns of
    DIRECTORY/.modelregignore (gitignore syntax; !pattern takes a file back) and --exclude;
    with --include, every file that matches none of its patterns.

    Files are hashed locally and the version digest is checked against the server's.  Bytes
    the server already has for this content are not sent again: pushing the same directory
    twice uploads nothing, and an interrupted push resumes where it stopped when run again.
    A version is never changed by a push: one that differs from an existing version in its
    files, metadata, description or tags makes a new version.
    """
    tag_values = _pairs(tags, "--tag")
    lineage_values: dict[str, Any] | None = _lineage(_pairs(lineage, "--lineage")) or None
    metadata = None
    if metadata_file is not None:
        try:
            metadata = json.load(metadata_file)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from exc
        if not isinstance(metadata, dict):
            raise click.BadParameter("must hold a JSON object", param_hint="--metadata")
    client = _client(ctx)
    client.parallel = parallel
    progress = _progress(as_json, quiet)
    try:
        result = client.push(directory, model, tags=tag_values, metadata=metadata,
                             lineage=lineage_values, description=description, alias=alias,
                             progress=progress, wait=wait,
                             exclude=excludes, include=includes)
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        _echo_json(result.as_dict())
    else:
        _print_push(result, verbose)


def _lineage(pairs: dict[str, str]) -> dict[str, Any]:
    """Lineage fields from ``--lineage KEY=VALUE``: ``parent_version`` is a number,
    ``dataset_digests`` a comma-separated list; the rest are text."""
    fields: dict[str, Any] = dict(pairs)
    if "parent_version" in fields:
        try:
            fields["parent_version"] = int(fields["parent_version"])
        except ValueError as exc:
            raise click.BadParameter("parent_version must be a version number",
                                     param_hint="--lineage") from exc
    if "dataset_digests" in fields:
        fields["dataset_digests"] = [d for d in fields["dataset_digests"].split(",") if d]
    return fields


def _print_push(result: PushResult, verbose: bool = False) -> None:
    version = result.version
    if result.existing:
        click.echo(f"{version.ref} is identical (files, metadata, description, tags): "
                   "nothing uploaded")
    else:
        click.echo(f"pushed {version.ref} ({version.status})")
    click.echo(f"  digest   {result.digest}")
    sent = len(result.uploaded_files)
    there = len(result.skipped_files) + len(result.linked_files)
    click.echo(f"  files    {sent} uploaded ({_size(result.uploaded_bytes)} sent), "
               f"{there} already on the server, {len(result.excluded_files)} left out")
    if verbose:
        for path in result.excluded_files:
            click.echo(f"  left out {path}")
    if version.aliases:
        click.echo(f"  aliases  {', '.join(sorted(version.aliases))}")
    if version.status == "validating":
        click.echo("  still validating: check later with "
                   f"`modelreg show {version.ref}`")
    _print_findings(version, result.findings)


def _print_findings(version: Version, findings: list[Finding]) -> None:
    if version.problems:
        click.echo("  problems:")
        for problem in version.problems:
            where = f" ({problem.field})" if problem.field else ""
            click.echo(f"    - {problem.code}: {problem.message}{where}")
    if findings:
        click.echo("  scan findings:")
        for finding in findings:
            click.echo(f"    - [{finding.severity}] {finding.path}: {finding.code}: "
                       f"{finding.message} ({finding.scanner})")


def _cache_options(function: Callable) -> Callable:
    """``--cache-dir``, ``--offline`` and ``--refresh``: where the cache is, and whether
    the server is asked."""
    function = click.option(
        "--refresh", is_flag=True,
        help="Require the server's answer: fail rather than fall back to what the cache "
             "recorded when the server cannot be reached.")(function)
    function = click.option(
        "--offline", is_flag=True, default=None,
        help="Never ask the server: a ref resolves to what it last resolved to in the "
             "cache, and only cached files are found (also: MODELREG_OFFLINE=1).")(function)
    return click.option(
        "--cache-dir", type=click.Path(file_okay=False, path_type=Path),
        help="The local cache (default: $MODELREG_CACHE, else ~/.cache/modelreg).")(function)


def _cache_client(ctx: click.Context, cache_dir: Path | None, offline: bool | None,
                  refresh: bool) -> tuple[Client, bool]:
    """A client whose cache is ``--cache-dir`` (when given), and whether to stay offline."""
    offline = offline_setting() if offline is None else offline
    if offline and refresh:
        raise click.UsageError("--offline and --refresh exclude each other")
    client = _client(ctx)
    if cache_dir is not None:
        client.cache = Cache(cache_dir, client.url)
    return client, offline


@client_command(main)
@click.argument("ref")
@click.argument("arguments", nargs=-1, metavar="[DEST] [PATH]...")
@click.option("--dest", "-o", "dest_option", type=click.Path(file_okay=False, path_type=Path),
              help="The destination directory (when its name is also a path of the version).")
@click.option("--include", "includes", multiple=True, metavar="PATTERN",
              help="Pull only files matching this gitignore-style pattern; repeat for several.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Leave out files matching this gitignore-style pattern; repeat for several.")
@click.option("--no-cache", is_flag=True,
              help="Download straight into DEST, without the local cache.")
@_cache_options
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Files downloaded at once.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@click.pass_context
def pull(ctx: click.Context, ref: str, arguments: tuple[str, ...], dest_option: Path | None,
         includes: tuple[str, ...], excludes: tuple[str, ...], no_cache: bool,
         cache_dir: Path | None, offline: bool | None, refresh: bool, parallel: int,
         quiet: bool, as_json: bool) -> None:
    """Download the version REF (MODEL/3, MODEL@ALIAS, MODEL@sha256:…, MODEL for the
    latest) into DEST, or only the files and folders PATH… of it.

    Files go through the local cache shared by every pull on this machine (--cache-dir,
    $MODELREG_CACHE, else ~/.cache/modelreg): a file is downloaded once, whatever the
    versions and destinations that hold it.  DEST gets copies (yours to edit); without DEST
    the files stay in the cache and the command prints where (`modelreg path REF` prints
    only that).  An argument that names a file or folder of the version is a PATH; the other
    one is DEST (or give DEST with --dest).

    Every file's sha256 is verified before it takes its name; an interrupted pull resumes
    its partial files when run again.  The server is asked what REF names each time; when it
    cannot be reached, an alias resolves to what it last pointed at (--refresh forbids that,
    --offline or MODELREG_OFFLINE=1 never asks).
    """
    parsed = _ref(ref)
    client, offline = _cache_client(ctx, cache_dir, offline, refresh)
    client.parallel = parallel
    if no_cache and offline:
        raise click.UsageError("--offline needs the cache: drop --no-cache")
    progress = _progress(as_json, quiet)
    try:
        listing, from_cache = Puller(client, progress).resolve(
            str(parsed), cache=None if no_cache else client.cache, offline=offline,
            refresh=refresh)
        known = {f.path for f in listing.files}
        known |= {"/".join(p.split("/")[:i]) for p in list(known)
                  for i in range(1, p.count("/") + 1)}
        paths = [a for a in arguments if a.strip("/") in known]
        others = [a for a in arguments if a.strip("/") not in known]
        if dest_option is not None:
            others.insert(0, "")
        if len(others) > 1:
            raise NotFound(f"{listing.model}/{listing.version} has no file or folder "
                           f"{others[1]!r} (only one argument is the destination)",
                           code="file_not_found", details={"path": others[1]})
        destination = dest_option or (Path(others[0]) if others else None)
        if no_cache and destination is None:
            raise click.UsageError("--no-cache needs a destination (DEST or --dest)")
        result = client.pull(listing, destination, progress=progress, include=includes,
                             exclude=excludes, paths=paths, cache=not no_cache,
                             offline=offline)
    finally:
        if progress is not None:
            progress.close()
    result = dataclasses.replace(result, resolved_offline=from_cache)
    if as_json:
        _echo_json(result.as_dict())
    else:
        _print_pull(result)


def _print_pull(result: PullResult) -> None:
    where = result.destination if result.destination != result.cache_path else \
        f"the cache: {result.destination}"
    click.echo(f"pulled {result.model}/{result.version} into {where}")
    if result.digest:
        click.echo(f"  digest   {result.digest}")
    click.echo(f"  files    {len(result.downloaded_files)} downloaded "
               f"({_size(result.downloaded_bytes)}), {len(result.skipped_files)} already "
               "there, all verified")
    if result.resolved_offline:
        click.echo("  offline  resolved from the cache, without the server")


@client_command(main)
@click.argument("ref")
@click.option("--include", "includes", multiple=True, metavar="PATTERN",
              help="Only files matching this gitignore-style pattern; repeat for several.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Leave out files matching this gitignore-style pattern; repeat for several.")
@_cache_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def path(ctx: click.Context, ref: str, includes: tuple[str, ...], excludes: tuple[str, ...],
         cache_dir: Path | None, offline: bool | None, refresh: bool, quiet: bool) -> None:
    """Print the directory of version REF in the local cache, pulling its files first if
    they are not there: `python train.py --model "$(modelreg path fraud-detector@champion)"`.

    The files there are links into the cache (copies where links are refused): read them,
    do not edit them.  Progress goes to standard error.
    """
    parsed = _ref(ref)
    client, offline = _cache_client(ctx, cache_dir, offline, refresh)
    progress = None if quiet else NoticeProgress()
    click.echo(client.path(str(parsed), include=includes, exclude=excludes, offline=offline,
                           refresh=refresh, progress=progress))


@main.group()
def cache() -> None:
    """The local cache of pulled files: list it, remove versions, prune blobs."""


def _local_cache(ctx: click.Context, cache_dir: Path | None, need_server: bool) -> Cache:
    """The cache at ``--cache-dir`` (or the default), for the configured server if any."""
    options = ctx.find_root().obj or {}
    try:
        url = options.get("url") or load_settings().url
    except ValueError:
        url = None
    if need_server and not url:
        raise click.UsageError(
            "no registry configured: run `modelreg login URL`, or set MODELREG_URL")
    return Cache(cache_dir if cache_dir is not None else default_cache_dir(),
                 url or "http://localhost")


_cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path),
    help="The local cache (default: $MODELREG_CACHE, else ~/.cache/modelreg).")


@client_command(cache, "ls")
@_cache_dir_option
@json_option
@click.pass_context
def cache_ls(ctx: click.Context, cache_dir: Path | None, as_json: bool) -> None:
    """List the cached versions of every server: the refs that last resolved to each, how
    many of its files are cached, their size, and the directory."""
    versions = _local_cache(ctx, cache_dir, False).versions(every_server=True)
    if as_json:
        _echo_json([v.as_dict() for v in versions])
        return
    click.echo(f"{'VERSION':<40} {'REFS':<20} {'FILES':>9} {'SIZE':>10}  PATH")
    for v in versions:
        click.echo(f"{v.model + '/' + str(v.version):<40} {','.join(v.refs) or '-':<20} "
                   f"{f'{v.files}/{v.total_files}':>9} {_size(v.size):>10}  {v.path}")


@client_command(cache, "rm")
@click.argument("ref")
@_cache_dir_option
@click.pass_context
def cache_rm(ctx: click.Context, ref: str, cache_dir: Path | None) -> None:
    """Remove version REF of the configured server from the cache (its blobs go at the next
    `modelreg cache prune`); the server is not asked."""
    parsed = _ref(ref)
    local = _local_cache(ctx, cache_dir, True)
    listing = local.lookup(parsed.model, parsed.version or "latest")
    local.forget(listing.model, listing.version)
    click.echo(f"removed {listing.model}/{listing.version} from the cache")


@client_command(cache, "prune")
@click.option("--all", "everything", is_flag=True,
              help="Remove every cached version too, so every blob.")
@_cache_dir_option
@json_option
@click.pass_context
def cache_prune(ctx: click.Context, everything: bool, cache_dir: Path | None,
                as_json: bool) -> None:
    """Remove the cached files no cached version refers to (of every server); with --all,
    every cached version and file, and the partial files of interrupted pulls."""
    result = _local_cache(ctx, cache_dir, False).prune(everything=everything,
                                                       every_server=True)
    if as_json:
        _echo_json(result.as_dict())
        return
    if result.removed_versions:
        click.echo(f"removed {len(result.removed_versions)} cached version(s)")
    click.echo(f"removed {len(result.removed_blobs)} file(s), freed "
               f"{_size(result.freed_bytes)}")


# ----------------------------------------------------------------------- reading


#: Header rows of the listings of ``ls`` and ``search``.
MODEL_HEADER = f"{'MODEL':<32} {'LATEST':<6} ALIASES"
VERSION_HEADER = f"{'VERSION':>7}  {'STATUS':<10} {'DIGEST':<19}  {'CREATED':<16}  ALIASES"


def _model_line(model: Model) -> str:
    aliases = ", ".join(f"{a}→{n}" for a, n in sorted(model.aliases.items()))
    latest = "-" if model.latest_version is None else str(model.latest_version)
    return f"{model.name:<32} {latest:<6} {aliases}"


def _version_line(version: Version) -> str:
    digest = (version.digest or "")[:19]
    created = version.created_at.strftime("%Y-%m-%d %H:%M") if version.created_at else ""
    aliases = ", ".join(version.aliases)
    return f"{version.number:>7}  {version.status:<10} {digest:<19}  {created:<16}  {aliases}"


@client_command(main, "ls")
@click.argument("ref", required=False)
@json_option
@click.pass_context
def ls(ctx: click.Context, ref: str | None, as_json: bool) -> None:
    """List models; the versions of a model (REF = MODEL); the files of a version
    (REF = MODEL/3, MODEL@ALIAS, …)."""
    client = _client(ctx)
    if ref is None:
        models = list(client.list_models())
        if as_json:
            _echo_json([m.as_dict() for m in models])
            return
        click.echo(MODEL_HEADER)
        for model in models:
            click.echo(_model_line(model))
        return
    parsed = _ref(ref)
    if parsed.version is None:
        versions = list(client.list_versions(parsed.model))
        if as_json:
            _echo_json([v.as_dict() for v in versions])
            return
        click.echo(VERSION_HEADER)
        for version in versions:
            click.echo(_version_line(version))
        return
    listing = client.list_files(parsed.model, parsed.version)
    if as_json:
        _echo_json(listing.as_dict())
        return
    click.echo(f"{'SIZE':>14}  {'SHA256':<12}  PATH")
    for file in listing.files:
        click.echo(f"{file.size:>14,}  {file.sha256[:12]}  {file.path}")


@client_command(main)
@click.argument("ref")
@json_option
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a model (REF = MODEL) or a version with its files (REF = MODEL/3, MODEL@ALIAS,
    MODEL@sha256:…)."""
    parsed = _ref(ref)
    client = _client(ctx)
    if parsed.version is None:
        model = client.get_model(parsed.model)
        if as_json:
            _echo_json(model.as_dict())
            return
        click.echo(f"model        {model.name}")
        click.echo(f"description  {model.description}")
        click.echo(f"latest       {model.latest_version or '-'}")
        for key, value in sorted(model.tags.items()):
            click.echo(f"tag          {key}={value}")
        for alias, number in sorted(model.aliases.items()):
            click.echo(f"alias        {alias} → {number}")
        click.echo(f"updated      {model.updated_at} by {model.updated_by or '-'}")
        return
    version = client.get_version(parsed.model, parsed.version)
    files = client.list_files(version.model, version.number).files
    findings = client.list_findings(version.model, version.number)
    if as_json:
        _echo_json({**version.as_dict(), "files": [f.as_dict() for f in files],
                    "findings": [f.as_dict() for f in findings]})
        return
    click.echo(f"version      {version.ref}")
    click.echo(f"status       {version.status}")
    click.echo(f"digest       {version.digest or '-'}")
    click.echo(f"description  {version.description}")
    for key, value in sorted(version.tags.items()):
        click.echo(f"tag          {key}={value}")
    if version.aliases:
        click.echo(f"aliases      {', '.join(version.aliases)}")
    if version.metadata:
        click.echo(f"metadata     {json.dumps(version.metadata, sort_keys=True)}")
    click.echo(f"created      {version.created_at} by {version.created_by or '-'}")
    click.echo(f"files        {len(files)} ({_size(sum(f.size for f in files))})")
    for file in files:
        click.echo(f"  {file.size:>14,}  {file.sha256[:12]}  {file.path}")
    _print_findings(version, findings)


@client_command(main)
@click.argument("filter_text", metavar="FILTER")
@click.option("--model", "-m", help="Search the versions of this model instead of models.")
@click.option("--order-by", help="name|created|updated (models), number|created|updated "
              "(versions), optionally followed by asc or desc.")
@json_option
@click.pass_context
def search(ctx: click.Context, filter_text: str, model: str | None, order_by: str | None,
           as_json: bool) -> None:
    """Search models (or a model's versions) with a filter, e.g.
    "name GLOB 'fraud-*' AND tag.team = 'risk'" or "metadata.metrics.auc > 0.9"."""
    client = _client(ctx)
    if model is None:
        models = list(client.list_models(filter_text, order_by=order_by))
        if as_json:
            _echo_json([m.as_dict() for m in models])
            return
        click.echo(MODEL_HEADER)
        for found in models:
            click.echo(_model_line(found))
        return
    versions = list(client.list_versions(model, filter_text, order_by=order_by))
    if as_json:
        _echo_json([v.as_dict() for v in versions])
        return
    click.echo(VERSION_HEADER)
    for version in versions:
        click.echo(_version_line(version))


# ----------------------------------------------------------------------- aliases


@main.group()
def alias() -> None:
    """Point aliases (champion, staging, …) at versions."""


@client_command(alias, "set")
@click.argument("model")
@click.argument("name", metavar="ALIAS")
@click.argument("version", type=click.IntRange(1))
@json_option
@click.pass_context
def alias_set(ctx: click.Context, model: str, name: str, version: int, as_json: bool) -> None:
    """Point ALIAS of MODEL at VERSION (a number; the version must be ready)."""
    result = _client(ctx).set_alias(model, name, version)
    if as_json:
        _echo_json(result.as_dict())
    else:
        click.echo(f"{model}@{name} → {result.version}")


@client_command(alias, "rm")
@click.argument("model")
@click.argument("name", metavar="ALIAS")
@click.pass_context
def alias_rm(ctx: click.Context, model: str, name: str) -> None:
    """Delete ALIAS of MODEL (the version stays)."""
    _client(ctx).delete_alias(model, name)
    click.echo(f"alias {model}@{name} deleted")


@client_command(alias, "ls")
@click.argument("model")
@json_option
@click.pass_context
def alias_ls(ctx: click.Context, model: str, as_json: bool) -> None:
    """List the aliases of MODEL."""
    aliases = _client(ctx).list_aliases(model)
    if as_json:
        _echo_json([a.as_dict() for a in aliases])
        return
    for item in aliases:
        click.echo(f"{item.alias:<24} → {item.version}   by {item.updated_by or '-'}")


@client_command(alias, "history")
@click.argument("model")
@click.argument("name", metavar="ALIAS")
@json_option
@click.pass_context
def alias_history(ctx: click.Context, model: str, name: str, as_json: bool) -> None:
    """Show every move of ALIAS of MODEL, newest first: from which version to which, who
    moved it and when."""
    moves = list(_client(ctx).alias_history(model, name))
    if as_json:
        _echo_json([m.as_dict() for m in moves])
        return
    click.echo(f"{'WHEN':<20} {'FROM':>5}  {'TO':>5}  BY")
    for move in moves:
        when = move.at.strftime("%Y-%m-%d %H:%M:%S") if move.at else "-"
        before = "-" if move.from_version is None else str(move.from_version)
        after = "-" if move.to_version is None else str(move.to_version)
        click.echo(f"{when:<20} {before:>5}  {after:>5}  {move.actor or '-'}")


# -------------------------------------------------------------------------- tags


@main.group()
def tag() -> None:
    """Set and remove tags of models (REF = MODEL) and versions (REF = MODEL/3)."""


def _tag_target(ref: str, client: Client) -> tuple[str, int | None]:
    parsed = _ref(ref)
    if parsed.version is None:
        return parsed.model, None
    if parsed.is_number:
        return parsed.model, int(parsed.version)
    # Tags are written by number: resolve an alias or digest first.
    return parsed.model, client.get_version(parsed.model, parsed.version).number


@client_command(tag, "set")
@click.argument("ref")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def tag_set(ctx: click.Context, ref: str, pairs: tuple[str, ...]) -> None:
    """Set tags on a model or a version."""
    values = _pairs(pairs, "KEY=VALUE")
    client = _client(ctx)
    model, number = _tag_target(ref, client)
    for key, value in values.items():
        if number is None:
            client.set_model_tag(model, key, value)
        else:
            client.set_version_tag(model, number, key, value)
    target = model if number is None else f"{model}/{number}"
    click.echo(f"{target}: set {', '.join(f'{k}={v}' for k, v in values.items())}")


@client_command(tag, "rm")
@click.argument("ref")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.pass_context
def tag_rm(ctx: click.Context, ref: str, keys: tuple[str, ...]) -> None:
    """Remove tags from a model or a version."""
    client = _client(ctx)
    model, number = _tag_target(ref, client)
    for key in keys:
        if number is None:
            client.delete_model_tag(model, key)
        else:
            client.delete_version_tag(model, number, key)
    target = model if number is None else f"{model}/{number}"
    click.echo(f"{target}: removed {', '.join(keys)}")


# ------------------------------------------------------------------------ delete


@client_command(main)
@click.argument("ref")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--drop-alias", "drop_aliases", multiple=True, metavar="ALIAS",
              help="Delete this alias with the version (repeat for several); a version an "
                   "alias points at is not deleted otherwise.")
@click.pass_context
def rm(ctx: click.Context, ref: str, yes: bool, drop_aliases: tuple[str, ...]) -> None:
    """Delete a model with all its versions (REF = MODEL) or one version (REF = MODEL/3).

    Asks for confirmation unless --yes is given; without a terminal to ask on, --yes is
    required.  A version an alias points at is deleted only with --drop-alias naming each
    of its aliases.
    """
    parsed = _ref(ref)
    if parsed.version is not None and not parsed.is_number:
        raise click.BadParameter("delete a version by its number: MODEL/3", param_hint="REF")
    if drop_aliases and parsed.version is None:
        raise click.BadParameter("--drop-alias is for deleting a version: MODEL/3",
                                 param_hint="--drop-alias")
    client = _client(ctx)
    if parsed.version is None:
        model = client.get_model(parsed.model)
        what = f"model {model.name} with all its versions and aliases"
    else:
        version = client.get_version(parsed.model, parsed.version)
        what = f"version {version.ref}"
        dropping = [name for name in drop_aliases if name in version.aliases]
        if dropping:
            what += f" and its alias(es) {', '.join(dropping)}"
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to delete {what} without --yes "
                                   "(no terminal to confirm on)")
        click.confirm(f"Delete {what}?", abort=True)
    if parsed.version is None:
        client.delete_model(parsed.model)
    else:
        client.delete_version(parsed.model, int(parsed.version), drop_aliases=drop_aliases)
    click.echo(f"deleted {what}")

