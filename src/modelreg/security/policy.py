"""The Pyramid security policy: bearer tokens (or a plugin) say who, grants say what.

Every request's context is a :class:`ModelContext` naming the model in the route
(``request.matchdict["model"]``) — the resource the request actually touches, never a name
from the body — or none for routes without a model.  Views declare one of the permissions
``read``, ``write`` and ``admin``, which :meth:`SecurityPolicy.permits` checks with
:class:`~modelreg.security.access.Access`:

* on a model: the caller's level on it must reach the permission;
* without a model: ``admin`` is for global admins only (the admin API, the audit log);
  ``read`` and ``write`` need that level on some model, and the view narrows down (listing
  shows only readable models; creating checks the new name with :func:`require`).

Any other permission, including :data:`DENIED` (the default permission, so a view declared
without one), is refused.  A refusal answers 401 to an anonymous caller, 404 (exactly the
"no such model" answer) to a known caller who may not even read the model — so that
existence does not leak — and 403 otherwise.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import Allowed, Denied

from .. import keys
from ..errors import ApiError, Forbidden, Unauthorized, error_response
from ..models import ApiToken, Model, utcnow
from ..registry.errors import model_not_found
from ..types import TokenCredentials
from .access import GRANTABLE, Access, Identity, Level
from .throttle import Throttle
from .tokens import TOKEN_PREFIX, TokenUse, authenticate_token, identity_for_name

log = logging.getLogger(__name__)

#: The default permission: nobody holds it, so a view without a permission is refused.
DENIED = "modelreg.denied"
#: ``last_used_at`` is written at most this often per token (it costs a write transaction).
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
#: Where the policy is kept in the registry.
POLICY_KEY = keys.SECURITY_POLICY


class ModelContext:
    """The resource of a request: the model it names, or ``None`` for routes without one.

    :param model: the model's name as written in the path (or, for creation, in the body).
    """

    __slots__ = ("model",)

    def __init__(self, model: str | None) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"ModelContext({self.model!r})"


def root_factory(request: Request) -> ModelContext:
    """The context of every route: the model of the route's ``{model}``, if it has one."""
    return ModelContext((request.matchdict or {}).get("model"))


def _context_model(request: Request, context: Any) -> str | None:
    if isinstance(context, ModelContext):
        return context.model
    return (request.matchdict or {}).get("model")


#: Where a request keeps its identity (``None`` when anonymous or refused) and the error
#: that refused its credentials, if any: in its ``__dict__``, found once per request (a new
#: attempt of pyramid_retry is a new request).  Pyramid's ``RequestLocalCache`` did the same
#: in weak dictionaries, emptied by a finished callback, at several times the instructions.
_IDENTITY_KEY = "_modelreg_identity"
_REFUSAL_KEY = "_modelreg_identity_refusal"
_UNKNOWN: Any = object()


class SecurityPolicy:
    """:class:`pyramid.interfaces.ISecurityPolicy` of the registry.

    :param anonymous: the level every caller has on every model without credentials
        (``modelreg.auth.anonymous``).
    :param throttle: the rule that blocks clients failing authentication too often.
    """

    def __init__(self, anonymous: Level, throttle: Throttle) -> None:
        self.anonymous = anonymous
        self.throttle = throttle

    # ------------------------------------------------------------------ identification

    def allows_anonymously(self, permission: str, *, model_scoped: bool) -> bool:
        """Whether a caller without credentials holds ``permission`` (on any model, when
        ``model_scoped``); the OpenAPI document marks such operations."""
        required = GRANTABLE.get(permission)
        if required is None:
            return False
        return Access(None, self.anonymous).allows(required, "any-model" if model_scoped else None)

    def identity(self, request: Request) -> Identity | None:
        """The caller, found once per request; ``None`` if anonymous.

        :raises Unauthorized: when credentials were sent but are refused (each time it is
            asked, but counted as one failed authentication).
        :raises TooManyRequests: when the client is blocked for failing too often.
        """
        kept = request.__dict__
        identity = kept.get(_IDENTITY_KEY, _UNKNOWN)
        if identity is _UNKNOWN:
            identity = kept[_IDENTITY_KEY] = self._identify(request)
        refusal = kept.get(_REFUSAL_KEY)
        if refusal is not None:
            raise refusal
        return identity  # type: ignore[no-any-return]

    def _identify(self, request: Request) -> Identity | None:
        """The caller; when its credentials are refused, ``None`` with the error kept for
        the request, so that asking again neither authenticates again nor counts another
        failure."""
        try:
            return self._load_identity(request)
        except Unauthorized as exc:
            self.throttle.failed(request)
            request.__dict__[_REFUSAL_KEY] = exc
        except ApiError as exc:
            request.__dict__[_REFUSAL_KEY] = exc
        return None

    def _load_identity(self, request: Request) -> Identity | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            credentials = credentials.strip()
            if scheme.lower() == "basic":
                # HTTP basic auth with the token as the password (MLflow's and git's
                # clients): the user name is ignored, the token says who.
                credentials = _basic_password(credentials)
                scheme = "bearer" if credentials.startswith(TOKEN_PREFIX) else scheme
            if scheme.lower() == "bearer" and credentials.startswith(TOKEN_PREFIX):
                return self._token_identity(request, credentials)
            # A blocked client is refused before its credentials are even looked at (a
            # bearer token's check reads the block in the token's own statement).
            self.throttle.check(request)
        hook = request.registry[keys.PLUGIN_MANAGER].hook
        name = hook.modelreg_authenticate(request=request)
        if name is not None:
            if isinstance(name, TokenCredentials):
                # A token a plugin found elsewhere (the web UI's session): exactly a bearer
                # token's identity, scopes, expiry, revocation and throttling.
                return self._token_identity(request, name.token)
            if header is None:
                self.throttle.check(request)
            return identity_for_name(request.dbsession, name)
        if header is not None:
            raise Unauthorized(
                "unsupported Authorization header: send 'Authorization: Bearer mr_...'",
                code="invalid_authorization",
                error="invalid_request",
            )
        return None

    def _token_identity(self, request: Request, token: str) -> Identity:
        """The identity of an API token, checked in one statement together with the
        client's block (a blocked client is refused before the token is looked at)."""
        identity, use = authenticate_token(
            request.dbsession, token, utcnow(), client=self.throttle.client(request),
            check_client=lambda blocked_until: self.throttle.check(request, blocked_until))
        self._note_use(request, use)
        return identity

    def _note_use(self, request: Request, token: TokenUse) -> None:
        """Stamp ``last_used_at`` after the request, in a transaction of its own.

        After the request, so that it never waits on the request's own write lock (SQLite);
        at most once per :data:`LAST_USED_RESOLUTION`, so that reads stay reads.
        """
        now = utcnow()
        if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
            return
        token_id = token.id

        def stamp(request: Request) -> None:
            engine = request.registry[keys.DB_WRITER_ENGINE]
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.update(ApiToken)
                        .where(ApiToken.id == token_id)
                        .values(last_used_at=now)
                    )
            except sa.exc.SQLAlchemyError:
                log.warning("could not record the use of API token %s", token.public_id,
                            exc_info=True)

        request.add_finished_callback(stamp)

    def known_identity_name(self, request: Request) -> str | None:
        """The caller's name if this request already identified it, without authenticating
        (for the access log, after the request)."""
        identity = request.__dict__.get(_IDENTITY_KEY)
        return identity.name if identity is not None else None

    def authenticated_userid(self, request: Request) -> str | None:
        """The principal's name, or ``None`` for anonymous callers and refused credentials.

        Never raises: pyramid_tm asks for it outside the exception views (to annotate the
        transaction), where an error would escape as a bare 500.  The refusal itself is
        raised by :meth:`permits`, whose errors are rendered as JSON.
        """
        try:
            identity = self.identity(request)
        except ApiError:
            return None
        return identity.name if identity is not None else None

    def access(self, request: Request) -> Access:
        """What the caller of ``request`` may do."""
        return Access(self.identity(request), self.anonymous)

    # ------------------------------------------------------------------- authorization

    def permits(self, request: Request, context: Any, permission: str) -> Allowed | Denied:
        """Whether the caller holds ``permission`` on ``context`` (see the module's doc)."""
        required = GRANTABLE.get(permission)
        if required is None:
            return Denied("permission %r is never granted", permission)
        access = self.access(request)
        model = _context_model(request, context)
        allowed = access.allows(required, model)
        who = access.identity.name if access.identity else "anonymous"
        where = f"model {model!r}" if model is not None else "the registry"
        if allowed:
            return Allowed("%s may %s %s", who, permission, where)
        return Denied("%s may not %s %s", who, permission, where)

    def remember(self, request: Request, userid: str, **kw: Any) -> list[tuple[str, str]]:
        """Nothing to remember: every request carries its token."""
        return []

    def forget(self, request: Request, **kw: Any) -> list[tuple[str, str]]:
        """Nothing to forget: there are no sessions."""
        return []


def _basic_password(credentials: str) -> str:
    """The password of HTTP basic credentials (``""`` when they do not decode)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def security_policy(request: Request) -> SecurityPolicy:
    """The registry's :class:`SecurityPolicy`."""
    return request.registry[POLICY_KEY]


def denial(
    request: Request, permission: str, model: str | None, *, hide_model: bool = True
) -> ApiError:
    """The error that answers a refused request: 401, 404 or 403 (see the module's doc).

    :param hide_model: answer 404 when the caller may not read ``model``; ``False`` where the
        name comes from the request body (creating, renaming), which reveals nothing.
    """
    access = security_policy(request).access(request)
    if access.identity is None:
        return Unauthorized(
            "authentication required: send 'Authorization: Bearer <token>'",
            code="unauthorized",
        )
    if hide_model and model is not None and access.level_on(model) < Level.READ:
        return model_not_found(model)
    where = f"model {model!r}" if model is not None else "the registry"
    required = GRANTABLE.get(permission)
    by_token = required is not None and access.without_token().allows(required, model)
    return Forbidden(
        f"{access.identity.name} may not {permission} {where}"
        + (": the token's scopes do not allow it" if by_token else ""),
        code="token_scope" if by_token else "forbidden",
        details={"permission": permission, **({"model": model} if model else {})},
    )


def require(
    request: Request, permission: str, model: str, *, hide_model: bool = False
) -> None:
    """Raise the right error unless the caller holds ``permission`` on the model ``model``.

    For names that come from the request body: creating a model needs ``write`` on its name,
    renaming one ``admin`` on the new name.
    """
    if not request.has_permission(permission, ModelContext(model)):
        raise denial(request, permission, model, hide_model=hide_model)


def caller_access(request: Request) -> Access:
    """What the caller of ``request`` may do (its identity is ``None`` when anonymous).

    :raises ApiError: 401 for credentials that are refused (unknown, expired, revoked).
    """
    return security_policy(request).access(request)


def readable_models(request: Request) -> Any | None:
    """SQL limiting a query of :class:`~modelreg.models.Model` to the models the caller may
    read, or ``None`` when it may read them all."""
    return security_policy(request).access(request).readable_clause(Model.normalized_name)


def forbidden_view(exc: Exception, request: Request) -> Response:
    """Render a refusal of the view's permission check as 401, 404 or 403."""
    model = (request.matchdict or {}).get("model")
    permission = _permission_of(getattr(exc, "result", None))
    return error_response(request, denial(request, permission, model))


def _permission_of(result: Any) -> str:
    """The permission a refusal of :meth:`SecurityPolicy.permits` was about."""
    args = getattr(result, "args", ())
    return str(args[1]) if len(args) >= 2 else "access"
