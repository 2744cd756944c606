"""Where the client keeps things: the user's config file (URL and token) and push state.

* The config file is ``$MODELREG_CONFIG`` if set, else ``$XDG_CONFIG_HOME/modelreg/config.toml``
  (``~/.config/modelreg/config.toml`` when ``XDG_CONFIG_HOME`` is unset).  It holds ``url`` and
  ``token`` and is written with permissions 0600 (its directory 0700).
* ``MODELREG_URL`` and ``MODELREG_TOKEN`` override what the file says; ``MODELREG_RETRIES``
  sets how often idempotent requests are retried (default 4, with exponential backoff).
* Push state (upload sessions to resume after an interruption) lives in
  ``$MODELREG_STATE_DIR``, else ``$XDG_STATE_HOME/modelreg`` (``~/.local/state/modelreg``).
* The cache of pulled files (:mod:`modelreg_client.cache`) lives in ``$MODELREG_CACHE``, else
  ``$XDG_CACHE_HOME/modelreg`` (``~/.cache/modelreg``); ``MODELREG_OFFLINE=1`` makes pulls
  use only the cache, never asking the server (like the Hugging Face Hub's
  ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "cache_dir", "config_path", "load_settings", "offline_setting",
           "retries_setting", "save_settings", "state_dir"]

CONFIG_ENV = "MODELREG_CONFIG"
URL_ENV = "MODELREG_URL"
TOKEN_ENV = "MODELREG_TOKEN"  # noqa: S105 - the variable's name, not a secret
STATE_ENV = "MODELREG_STATE_DIR"
RETRIES_ENV = "MODELREG_RETRIES"
CACHE_ENV = "MODELREG_CACHE"
OFFLINE_ENV = "MODELREG_OFFLINE"
DEFAULT_RETRIES = 4


@dataclass(frozen=True)
class Settings:
    """The server to talk to and the token to send (``None`` for anonymous access).

    :ivar source: where the values came from, for messages (``environment``, the file's path).
    """

    url: str | None
    token: str | None
    source: str = ""
    retries: int = DEFAULT_RETRIES


def _home_dir(variable: str, default: str, environ: Mapping[str, str]) -> Path:
    value = environ.get(variable)
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / default


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user's config file (it need not exist)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    return _home_dir("XDG_CONFIG_HOME", ".config", environ) / "modelreg" / "config.toml"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of push state (it need not exist)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    return _home_dir("XDG_STATE_HOME", ".local/state", environ) / "modelreg"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The root of the cache of pulled files (it need not exist)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return _home_dir("XDG_CACHE_HOME", ".cache", environ) / "modelreg"


def offline_setting(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``MODELREG_OFFLINE`` asks for the cache only (``1``, ``true``, ``yes``, ``on``)."""
    environ = os.environ if environ is None else environ
    return environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _read_file(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the config file {path}: {exc}") from exc
    return {key: value for key, value in data.items() if isinstance(value, str)}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """URL and token: the environment's, else the config file's.

    :raises ValueError: when the config file exists but cannot be read.
    """
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    stored = _read_file(path)
    url = environ.get(URL_ENV) or stored.get("url")
    token = environ.get(TOKEN_ENV) or stored.get("token")
    source = "environment" if environ.get(URL_ENV) else str(path)
    return Settings(url=url, token=token, source=source, retries=retries_setting(environ))


def retries_setting(environ: Mapping[str, str] | None = None) -> int:
    """How often idempotent requests are retried: ``MODELREG_RETRIES`` or the default.

    :raises ValueError: when the variable is not a whole number.
    """
    environ = os.environ if environ is None else environ
    retries = environ.get(RETRIES_ENV, "").strip()
    if retries and not retries.isdigit():
        raise ValueError(f"{RETRIES_ENV} must be a whole number, not {retries!r}")
    return int(retries) if retries else DEFAULT_RETRIES


def _toml_string(value: str) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


def save_settings(url: str, token: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """Write URL and token to the config file, readable by the user only; return its path.

    The file is written under a temporary name created with mode 0600 and renamed into place,
    so the token is never readable by others, even for a moment.
    """
    path = config_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["# modelreg client settings (written by `modelreg login`)",
             f"url = {_toml_string(url)}"]
    if token:
        lines.append(f"token = {_toml_string(token)}")
    text = "\n".join(lines) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
