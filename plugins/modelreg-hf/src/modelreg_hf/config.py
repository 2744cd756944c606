"""The settings of modelreg-hf (``modelreg.hf.*`` in the app's ini section)."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "modelreg.hf."
MIB = 1024 * 1024
_NAMESPACE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")

#: A key made at start-up when ``modelreg.hf.upload_secret`` is not set: upload URLs are
#: then valid only on the process that signed them (one Waitress process is fine).
_PROCESS_SECRET = secrets.token_bytes(32)


def _int(settings: dict[str, Any], name: str, default: int, minimum: int) -> int:
    raw = settings.get(PREFIX + name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"{PREFIX}{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{PREFIX}{name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class HubSettings:
    """What the plugin reads from the settings.

    :ivar upload_secret: the key that signs LFS upload URLs (``modelreg.hf.upload_secret``;
        set it when more than one server process answers, e.g. gunicorn workers).
    :ivar upload_secret_set: whether that key came from the settings (else this process made
        it, and upload URLs are valid on this process only).
    :ivar upload_url_ttl: seconds an upload URL stays valid (``upload_url_ttl``, 3600).
    :ivar part_size: the single-request limit of an LFS upload; larger files are offered the
        multipart transfer in parts of this size (``part_size``, 64 MiB).
    :ivar commit_wait: seconds a commit waits for scanning before answering
        (``commit_wait``, 120).
    :ivar max_commit_body: bytes of a commit's NDJSON body (``max_commit_body``, 16 MiB).
    :ivar hold_grace: seconds after its URL expired that an upload never committed is
        released to garbage collection (``hold_grace``, 86400).
    :ivar namespace: the namespace whose repos are the models of plain names
        (``namespace``, ``modelreg``): ``modelreg/fraud-detector`` is ``fraud-detector``.
    """

    upload_secret: bytes
    upload_secret_set: bool
    upload_url_ttl: int
    part_size: int
    commit_wait: int
    max_commit_body: int
    hold_grace: int = 86400
    namespace: str = "modelreg"

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> HubSettings:
        """Read and check the settings; ``ValueError`` names a wrong one."""
        secret = str(settings.get(PREFIX + "upload_secret") or "").strip()
        if secret and len(secret) < 16:
            raise ValueError(f"{PREFIX}upload_secret must have at least 16 characters")
        namespace = str(settings.get(PREFIX + "namespace") or "modelreg").strip()
        if not _NAMESPACE.fullmatch(namespace) or "--" in namespace:
            raise ValueError(f"{PREFIX}namespace must be a Hub namespace (letters, digits, "
                             f"'-', '_', '.'), not {namespace!r}")
        return cls(
            namespace=namespace,
            upload_secret=secret.encode() if secret else _PROCESS_SECRET,
            upload_secret_set=bool(secret),
            upload_url_ttl=_int(settings, "upload_url_ttl", 3600, 10),
            part_size=_int(settings, "part_size", 64 * MIB, 1024),
            commit_wait=_int(settings, "commit_wait", 120, 0),
            max_commit_body=_int(settings, "max_commit_body", 16 * MIB, 1024),
            hold_grace=_int(settings, "hold_grace", 86400, 0),
        )


#: Where :func:`hub_settings` keeps the parsed settings in the app's registry.
SETTINGS_KEY = "modelreg_hf.settings"


def hub_settings(registry: Any) -> HubSettings:
    """The plugin's settings, parsed once per app (at start-up, by the views'
    ``includeme``) rather than on every request."""
    parsed = registry.get(SETTINGS_KEY)
    if parsed is None:
        parsed = HubSettings.from_settings(registry.settings)
        registry[SETTINGS_KEY] = parsed
    return parsed
