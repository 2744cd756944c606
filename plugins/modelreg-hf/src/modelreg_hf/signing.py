"""Signed, short-lived LFS upload URLs.

The Hub's client sends no token with the uploads the LFS batch answer directs it to, so each
URL carries what it allows: the model, the content's sha256 and size, the number of parts
and an expiry, signed with HMAC-SHA256 (:attr:`modelreg_hf.config.HubSettings.upload_secret`).
A URL uploads exactly those bytes to that model, until it expires, and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from modelreg.api import ApiError


@dataclass(frozen=True)
class UploadGrant:
    """What a signed upload URL allows."""

    model: str
    oid: str
    size: int
    parts: int
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, grant: UploadGrant) -> str:
    """The token of ``grant`` (URL-safe: one path segment)."""
    body = json.dumps([grant.model, grant.oid, grant.size, grant.parts, grant.expires],
                      separators=(",", ":")).encode()
    mac = hmac.new(secret, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify(secret: bytes, token: str) -> UploadGrant:
    """The grant of a token; 403 for a forged or damaged one, 403 once it has expired."""
    body_text, _, mac_text = token.partition(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, TypeError):
        body, mac = b"", b""
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not body or not hmac.compare_digest(mac, expected):
        raise ApiError("this upload URL is not valid (wrong signature)", code="invalid_upload_url",
                       status=403)
    model, oid, size, parts, expires = json.loads(body)
    if expires < time.time():
        raise ApiError("this upload URL has expired: ask the LFS batch API for a new one",
                       code="upload_url_expired", status=403)
    return UploadGrant(model, oid, size, parts, expires)
