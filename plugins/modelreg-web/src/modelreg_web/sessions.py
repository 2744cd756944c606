"""Sign-in sessions and CSRF tokens of the web UI.

A pasted API token becomes a server-side session: the browser gets a cookie
``<session id>.<key>``; the table ``web_sessions`` keeps the sha256 of the id and the token
sealed with a keystream of the key (so neither the table nor the cookie alone gives the
token away).  Each UI request hands the token to the core's security policy through the
``modelreg_authenticate`` hook as :class:`modelreg.api.TokenCredentials`, so the session has
exactly the token's scopes and ends when the token is revoked or expires.  The cookie is
read on the UI's own paths only (:func:`is_ui_path`): the JSON APIs ignore it.

CSRF: every form carries ``csrf_token``; signed in, it is the session's own random value;
signed out (the sign-in form), it is the value of a ``modelreg_csrf`` cookie (double
submit).  Both are compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pyramid.request import Request
from pyramid.response import Response

from modelreg.api import mark_changed

from .tables import web_sessions

#: The prefix of every UI page but the home page ``/``.
PREFIX = "/ui/"
SESSION_COOKIE = "modelreg_session"
CSRF_COOKIE = "modelreg_csrf"
CSRF_FIELD = "csrf_token"
#: Setting: hours a session lasts at most (the token's own expiry ends it sooner).
SESSION_HOURS = "modelreg.web.session_hours"
DEFAULT_SESSION_HOURS = 12
_STATE = "modelreg_web.session"


def is_ui_path(request: Request) -> bool:
    """Whether the request's path is one of the UI's (``/`` or under ``/ui/``).

    Read from the WSGI environ's raw ``PATH_INFO`` (bytes as latin-1, PEP 3333) rather than
    ``request.path``, which decodes UTF-8 and raises for a path such as ``/%ff``: this runs
    for every response, the core's 400 ``invalid_encoding`` included.
    """
    path = request.environ.get("PATH_INFO", "")
    return path == "/" or path.startswith(PREFIX)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _keystream(key: str, length: int) -> bytes:
    blocks = []
    counter = 0
    while sum(map(len, blocks)) < length:
        blocks.append(hmac.new(key.encode(), counter.to_bytes(4, "big"),
                               hashlib.sha256).digest())
        counter += 1
    return b"".join(blocks)[:length]


def seal(token: str, key: str) -> str:
    """``token`` XOR a keystream derived from ``key``, as hex (also unseals hex → text)."""
    data = token.encode()
    return bytes(a ^ b for a, b in zip(data, _keystream(key, len(data)), strict=True)).hex()


def unseal(sealed: str, key: str) -> str | None:
    """The token of :func:`seal`, or ``None`` when it does not decode."""
    try:
        data = bytes.fromhex(sealed)
        return bytes(a ^ b for a, b in zip(data, _keystream(key, len(data)),
                                             strict=True)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Session:
    """The signed-in session of a request."""

    id_hash: str
    token: str
    csrf: str
    principal: str
    token_id: str


def current(request: Request) -> Session | None:
    """The request's session (looked up once per request), on UI paths only."""
    if _STATE in request.environ:
        return request.environ[_STATE]
    found = None
    if is_ui_path(request):
        found = _load(request)
    request.environ[_STATE] = found
    return found


def _load(request: Request) -> Session | None:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    session_id, _, key = cookie.partition(".")
    if not session_id or not key or len(cookie) > 200:
        return None
    row = request.dbsession.execute(
        sa.select(web_sessions).where(web_sessions.c.id == _hash(session_id),
                                      web_sessions.c.expires_at > _now())).first()
    if row is None:
        return None
    token = unseal(row.sealed_token, key)
    if token is None:
        return None
    return Session(row.id, token, row.csrf, row.principal, row.token_id)


def _cookie_options(request: Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Lax", "secure": request.scheme == "https",
            "path": "/"}


def start(request: Request, response: Response, token: str, identity: dict[str, Any]) -> None:
    """Create a session for ``token`` (already checked: ``identity`` is whom it stands
    for) and set its cookie on ``response``."""
    session_id, key = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    hours = int(request.registry.settings.get(SESSION_HOURS, DEFAULT_SESSION_HOURS))
    now = _now()
    db = request.dbsession
    db.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at <= now))
    db.execute(sa.insert(web_sessions).values(
        id=_hash(session_id), sealed_token=seal(token, key), csrf=secrets.token_urlsafe(32),
        principal=identity["name"], token_id=identity.get("token_id") or "",
        created_at=now, expires_at=now + dt.timedelta(hours=hours)))
    mark_changed(db)
    response.set_cookie(SESSION_COOKIE, f"{session_id}.{key}",
                        max_age=hours * 3600, **_cookie_options(request))


def end(request: Request, response: Response) -> None:
    """Delete the request's session, if any, and its cookie."""
    session = current(request)
    if session is not None:
        request.dbsession.execute(sa.delete(web_sessions)
                                  .where(web_sessions.c.id == session.id_hash))
        mark_changed(request.dbsession)
        request.environ[_STATE] = None
    response.delete_cookie(SESSION_COOKIE, path="/")


def forget(request: Request, response: Response) -> None:
    """Delete the session's cookie only, for a request whose session cannot write (a
    read-only page, modelreg_web.views.READ_ONLY_PAGES): its row expires on its own."""
    request.environ[_STATE] = None
    response.delete_cookie(SESSION_COOKIE, path="/")


def csrf_token(request: Request) -> str:
    """The CSRF value the request's forms carry (the session's, or the cookie's, creating
    that cookie on the response when missing)."""
    session = current(request)
    if session is not None:
        return session.csrf
    value = request.cookies.get(CSRF_COOKIE) or request.environ.get("modelreg_web.csrf")
    if not value or len(value) > 100:
        value = secrets.token_urlsafe(32)
        request.environ["modelreg_web.csrf"] = value
        options = {**_cookie_options(request), "samesite": "Strict"}

        def add_cookie(request: Request, response: Response) -> None:
            response.set_cookie(CSRF_COOKIE, value, **options)

        request.add_response_callback(add_cookie)
    return value


def csrf_ok(request: Request) -> bool:
    """Whether the form posted with ``request`` carries the right CSRF value."""
    sent = request.POST.get(CSRF_FIELD, "")
    session = current(request)
    expected = session.csrf if session is not None else request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())
