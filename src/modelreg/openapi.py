"""API views declared once, with their schemas; the OpenAPI 3.1 document generated from them.

:class:`api_view` is a venusian decorator like Pyramid's ``view_config``: it registers the
view with its route, method and permission, and records the operation (request body schema,
response schema and status, parameters, errors) from which ``/api/v1/openapi.json`` is built.
:func:`parse_body` reads a JSON request body into its schema with the API's error rules.
"""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any, TypeVar

import venusian
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema
from pyramid.config import Configurator
from pyramid.events import BeforeRender, ContextFound, NewRequest
from pyramid.interfaces import IRendererFactory, IResponseFactory
from pyramid.renderers import JSON
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from zope.interface import implementedBy

from . import keys
from .db import add_read_only_view
from .errors import ApiError, BadRequest, NotFound, PayloadTooLarge, Unprocessable
from .settings import API_MAX_JSON_BODY

BodyT = TypeVar("BodyT", bound=BaseModel)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
OPERATIONS_KEY = keys.OPENAPI_OPERATIONS
MAX_JSON_BODY_SETTING = API_MAX_JSON_BODY
DEFAULT_MAX_JSON_BODY = 1024 * 1024
#: Deepest nesting of objects and arrays accepted in a JSON request body.
MAX_JSON_DEPTH = 32
#: Statuses every operation with a JSON request body may answer: too large, not JSON,
#: a value breaking a rule.
BODY_ERRORS = (413, 415, 422)


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


@dataclass(frozen=True)
class Param:
    """A query parameter of an operation."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    #: Error statuses a bad value of the parameter answers with (beside 400).
    errors: tuple[int, ...] = ()


@dataclass
class Operation:
    """One route and method as the OpenAPI document describes it."""

    route_name: str
    method: str
    summary: str
    permission: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    #: Other success statuses answered with the same body (201 when a PUT creates).
    also: tuple[int, ...] = ()
    #: Other success statuses answered with a body of another schema: ``(status, schema)``.
    others: tuple[tuple[int, type[BaseModel]], ...] = ()
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    #: Media type of a raw (binary) request body, instead of a JSON ``body`` schema.
    body_media: str | None = None
    #: Media type of a raw (binary) success response, instead of a JSON ``response``.
    response_media: str | None = None
    #: Success statuses answered without a body (304, redirects).
    empty: tuple[int, ...] = ()


class api_view:
    """Declare a JSON API view: Pyramid view registration plus its OpenAPI operation.

    :param route_name: the route the view serves.
    :param request_method: the HTTP method.
    :param permission: the permission the caller needs (``NO_PERMISSION_REQUIRED`` for
        public views); required, so that no API view is left without one.
    :param body: the request body's schema, if the operation takes one.
    :param response: the response body's schema (``None`` for 204 responses).
    :param status: the success status.
    :param also: other success statuses with the same body schema.
    :param others: other success statuses with a body of their own schema (``{202:
        Schema}``).
    :param params: query parameters.
    :param errors: error statuses the operation may answer with (beside 400/404/500).
    :param tags: OpenAPI tags that group the operation.
    :param body_media: the media type of a raw request body (file uploads).
    :param response_media: the media type of a raw success response (file downloads).
    :param empty: success statuses answered without a body (304, redirects).
    """

    def __init__(
        self,
        route_name: str,
        request_method: str,
        *,
        permission: str,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        also: Iterable[int] = (),
        others: dict[int, type[BaseModel]] | None = None,
        params: Iterable[Param] = (),
        errors: Iterable[int] = (),
        tags: Iterable[str] = (),
        body_media: str | None = None,
        response_media: str | None = None,
        empty: Iterable[int] = (),
        **view_options: Any,
    ) -> None:
        self.route_name = route_name
        self.request_method = request_method
        self.permission = permission
        self.body = body
        self.response = response
        self.status = status
        self.also = tuple(also)
        self.others = tuple((others or {}).items())
        self.params = tuple(params)
        self.errors = tuple(errors)
        self.tags = tuple(tags)
        self.body_media = body_media
        self.response_media = response_media
        self.empty = tuple(empty)
        self.view_options = view_options

    def __call__(self, wrapped: Callable[[Request], Any]) -> Callable[[Request], Any]:
        settings = self

        def callback(context: Any, name: str, ob: Any) -> None:
            config: Configurator = context.config.with_package(info.module)
            summary = (ob.__doc__ or name).strip().splitlines()[0]
            add_api_view(
                config,
                ob,
                Operation(
                    route_name=settings.route_name,
                    method=settings.request_method,
                    summary=summary,
                    permission=settings.permission,
                    body=settings.body,
                    response=settings.response,
                    status=settings.status,
                    also=settings.also,
                    others=settings.others,
                    params=settings.params,
                    errors=settings.errors,
                    tags=settings.tags,
                    body_media=settings.body_media,
                    response_media=settings.response_media,
                    empty=settings.empty,
                ),
                **settings.view_options,
            )

        info = venusian.attach(wrapped, callback, category="pyramid")
        return wrapped


def add_api_view(
    config: Configurator, view: Callable[[Request], Any], operation: Operation, **options: Any
) -> None:
    """Register ``view`` for ``operation`` and record the operation for the OpenAPI document.

    ``etag=True`` (a ``GET`` with a JSON response) makes its answers conditional
    (:func:`conditional_view`); the document then lists ``304`` among its answers.
    ``read_only=True`` (a ``GET`` that never writes) serves its requests outside pyramid_tm
    (:func:`modelreg.db.add_read_only_view`).
    """
    renderer = options.pop("renderer", "json" if operation.response is not None else None)
    if options.pop("read_only", False):
        add_read_only_view(config, operation.route_name, operation.method)
    if options.get("etag") and 304 not in operation.empty:
        operation.empty = (*operation.empty, 304)
    config.add_view(
        view,
        route_name=operation.route_name,
        request_method=operation.method,
        permission=operation.permission,
        renderer=renderer,
        **options,
    )
    config.registry.setdefault(OPERATIONS_KEY, []).append(operation)


def operations(registry: Any) -> list[Operation]:
    """Every operation declared so far."""
    return list(registry.get(OPERATIONS_KEY, []))


# ------------------------------------------------------------------------- request bodies


def parse_body(request: Request, schema: type[BodyT]) -> BodyT:
    """Parse the JSON body of ``request`` into ``schema``.

    An empty body is ``{}``.  413 when larger than ``modelreg.api.max_json_body``; 415 when
    a body comes with another media type than JSON (so that no browser form or ``text/plain``
    request can reach a view); 400 when it is not JSON: not UTF-8, not one object, a key
    twice in one object, ``NaN`` or a number out of range, nested deeper than
    :data:`MAX_JSON_DEPTH`; 422 with every failed rule when a value is invalid (NUL
    characters and unpaired surrogates included, which no database stores).
    """
    limit = int(request.registry.settings.get(MAX_JSON_BODY_SETTING, DEFAULT_MAX_JSON_BODY))
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"request body too large: at most {limit} bytes of JSON",
            details={"max_bytes": limit},
        )
    raw = request.body_file.read(limit + 1) if request.content_length is None else request.body
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"request body too large: at most {limit} bytes of JSON", details={"max_bytes": limit}
        )
    if not raw.strip():
        data: Any = {}
    else:
        _check_json_media_type(request)
        data = _load_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    problem = _bad_text(data)
    if problem:
        raise Unprocessable(
            f"strings in the request body must not contain {problem}",
            code="invalid_body",
            details={"problems": [{"field": "", "message": problem, "type": "text"}]},
        )
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = [
            {
                "field": ".".join(str(part) for part in err["loc"]),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise Unprocessable(
            "invalid request body: "
            + "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems),
            code="invalid_body",
            details={"problems": problems},
        ) from exc


class _AnyObject(BaseModel):
    model_config = ConfigDict(extra="allow")


def read_json_object(request: Request) -> dict[str, Any]:
    """The JSON object of ``request``'s body, read with the API's rules (those of
    :func:`parse_body`: 413, 415, 400 and 422 for NUL characters and unpaired surrogates),
    for a view that checks the fields itself (a plugin's: ``modelreg.api.read_json_body``).
    An empty body is ``{}``."""
    return dict(parse_body(request, _AnyObject).model_extra or {})


def _check_json_media_type(request: Request) -> None:
    """415 unless the body is declared JSON (``application/json`` or ``*/*+json``) in UTF-8."""
    media = (request.content_type or "").lower()
    charset = (request.headers.get("Content-Type", "").lower().partition("charset=")[2]
               .split(";")[0].strip().strip('"'))
    is_json = media == "application/json" or (media.startswith("application/")
                                               and media.endswith("+json"))
    if not is_json or charset not in ("", "utf-8", "utf8"):
        shown = request.headers.get("Content-Type", "")[:100] or "none"
        raise ApiError(
            f"request body must be JSON: send 'Content-Type: application/json' (UTF-8), "
            f"not {shown!r}",
            code="unsupported_media_type",
            status=415,
            details={"content_type": shown},
        )


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:100]!r} in one object")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:50]} is out of range")
    return value


def _load_json(raw: bytes) -> Any:
    """The JSON value of a UTF-8 body (an optional byte-order mark is ignored); 400 if none."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_finite,
        )
    except (ValueError, RecursionError) as exc:
        # RecursionError: nested too deeply for the parser (thousands of levels).
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)[:200]
        raise BadRequest(
            f"request body is not valid JSON: {reason}", code="invalid_json"
        ) from exc
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise BadRequest(
            f"request body is not valid JSON: nested more than {MAX_JSON_DEPTH} levels",
            code="invalid_json",
            details={"max_depth": MAX_JSON_DEPTH},
        )
    return data


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest more than ``limit`` levels."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _bad_text(value: Any) -> str | None:
    """What no string (or key) of a parsed JSON value may hold, if one does: a NUL character
    or an unpaired surrogate (``"\\ud800"``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "NUL characters"
            if _SURROGATE.search(item):
                return "unpaired surrogates"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def refuse_undecodable_requests(event: NewRequest) -> None:
    """Answer 400 when the path or the query string is not UTF-8, or the query holds NUL.

    Runs first, before the route is matched, so that nothing later (routing, queries, error
    messages, logs) meets text it cannot decode or a database cannot store.
    """
    request = event.request
    try:
        request.path_info  # noqa: B018 - decodes PATH_INFO
    except UnicodeDecodeError:
        raise BadRequest(
            "the request path is not valid UTF-8 once percent-decoded", code="invalid_encoding"
        ) from None
    if not request.environ.get("QUERY_STRING"):
        return  # no parameters (request.GET is parsed when a view asks for it)
    try:
        params = request.GET
    except UnicodeDecodeError:
        raise BadRequest(
            "the query string is not valid UTF-8 once percent-decoded", code="invalid_encoding"
        ) from None
    for key, value in params.items():
        if "\x00" in key or "\x00" in value:
            raise BadRequest(
                f"query parameter {key[:100]!r} contains a NUL character",
                code="invalid_query",
                details={"parameter": key[:100]},
            )


def refuse_control_characters(event: ContextFound) -> None:
    """Answer 404 when a path segment holds a control character: no resource is named so.

    Runs once per request, after the route matched, so that no such string reaches a query.
    """
    matchdict = event.request.matchdict or {}
    for key, value in matchdict.items():
        if isinstance(value, str) and _CONTROL.search(value):
            raise NotFound(
                f"no such resource: the {key} in the path contains a control character",
                details={"field": key},
            )


# ---------------------------------------------------------------------- conditional GETs

#: Headers a 304 leaves out: it has no body (RFC 9110, 15.4.5: it carries the validators and
#: ``Cache-Control``, ``Vary`` … the 200 would have carried, not the body's own fields).
_BODY_HEADERS = frozenset(("content-length", "content-type", "content-encoding", "content-md5"))


def conditional_view(view: Callable[[Any, Request], Any], info: Any) -> Callable[..., Any]:
    """The view deriver of the ``etag`` view option: ``ETag`` and ``If-None-Match``.

    A ``200`` of a view declared with ``etag=True`` carries a strong ``ETag``: the MD5 of the
    rendered body (:meth:`webob.Response.md5_etag`), so it changes whenever a byte of the
    body does (a tag, an alias, a state) and needs no bookkeeping per resource.  When the
    request's ``If-None-Match`` (:attr:`webob.Request.if_none_match`: a list, weak tags
    compared weakly as RFC 9110 13.1.2 asks, ``*``) holds it, the answer is ``304 Not
    Modified`` with the ``ETag`` and no body.

    The deriver wraps the rendered view, inside Pyramid's permission check and the view's own
    lookups: a caller who may not read the resource, or a resource that does not exist, gets
    the same ``401``/``404`` as without the header — a ``304`` reveals nothing a ``200``
    would not.  The body is the same for every caller who may read it (the views with
    ``etag`` render no per-caller field; a list filtered by the caller's grants sets
    ``Vary: Authorization`` itself).

    A dict that :func:`json_etag_view` rendered (under Pyramid's renderer) already carries
    its ``ETag`` and was already compared: it passes through.
    """
    if not info.options.get("etag"):
        return view

    def conditional(context: Any, request: Request) -> Any:
        response = view(context, request)
        if (response.status_code != 200 or request.method not in ("GET", "HEAD")
                or request.__dict__.get(_RENDERED_KEY) is response):
            return response
        response.md5_etag()
        if response.etag in request.if_none_match:
            return _not_modified(response)
        return response

    return conditional


conditional_view.options = ("etag",)  # type: ignore[attr-defined]

#: Where :func:`json_etag_view` leaves the response it rendered (in the request's __dict__).
_RENDERED_KEY = "_modelreg_etag_rendered"


def _not_modified(response: Response) -> Response:
    """The ``304`` of a ``200`` whose ``ETag`` the request's ``If-None-Match`` holds."""
    return Response(
        status=304,
        headerlist=[(name, value) for name, value in response.headerlist
                    if name.lower() not in _BODY_HEADERS],
    )


def json_etag_view(view: Callable[[Any, Request], Any], info: Any) -> Callable[..., Any]:
    """The view deriver that renders the dict of a ``GET`` view declared with ``etag=True``
    and ``renderer="json"`` (every JSON read of the API) and gives it its ``ETag``, as
    Pyramid's renderer and :func:`conditional_view` would, in one step.

    It sits under Pyramid's renderer (``rendered_view``), which passes a response through.
    The answer is the same, byte for byte and header for header: the app's ``json``
    renderer's serializer and adapters, ``request.response`` (the response factory's) with
    ``Content-Type: application/json``, the MD5 ``ETag``, ``304`` on a match.  What it
    leaves out is what a JSON read does not use and costs about a tenth of its instructions
    (docs/performance.md, "Read path"): the renderer's per-call helper and system values,
    the ``BeforeRender`` event, and WebOb's header properties set one by one.  Pyramid's
    renderer renders instead (and :func:`conditional_view` adds the ``ETag``) when the app
    has a ``BeforeRender`` subscriber, a request overrides the renderer, the view returned
    something other than a dict, or the ``json`` renderer is not Pyramid's ``JSON``.
    """
    renderer = info.options.get("renderer")
    if not info.options.get("etag") or getattr(renderer, "name", None) != "json":
        return view
    registry = info.registry
    # Looked up at the first request, once the configuration is complete: the json renderer
    # (None if Pyramid's renderer must render), and whether the response factory is the
    # default one (a plain Response, which can be made with its headers at once).
    plan: list[Any] = []

    def prepare() -> None:
        factory = registry.queryUtility(IRendererFactory, name="json")
        listeners = registry.adapters.subscriptions((implementedBy(BeforeRender),), None)
        plan[:] = [factory if isinstance(factory, JSON) and not listeners else None,
                   registry.queryUtility(IResponseFactory) is None]

    def json_etag(context: Any, request: Request) -> Any:
        result = view(context, request)
        if not plan:
            prepare()
        factory, plain_responses = plan
        if (factory is None or result.__class__ is not dict
                or request.method not in ("GET", "HEAD")
                or "override_renderer" in request.__dict__):
            return result
        text = factory.serializer(result, default=factory._make_default(request), **factory.kw)
        if plain_responses and "response" not in request.__dict__:
            # The view left request.response alone: the response the renderer would have
            # made of a new Response(), made with its final headers at once.
            body = text.encode("utf-8")
            etag = b64encode(md5(body, usedforsecurity=False).digest()).decode("ascii").rstrip("=")
            response = Response(app_iter=[body], headerlist=[
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("ETag", f'"{etag}"')])
            request.__dict__["response"] = response  # what request.response now is
        else:  # as the json renderer, Pyramid's renderer and conditional_view do it
            response = request.response
            if response.status_code != 200:
                return result  # the view chose another status: rendered as before
            if response.content_type == response.default_content_type:
                response.content_type = "application/json"
            response.text = text
            response.md5_etag()
            etag = response.etag
        request.__dict__[_RENDERED_KEY] = response
        if "HTTP_IF_NONE_MATCH" in request.environ and etag in request.if_none_match:
            return _not_modified(response)
        return response

    return json_etag


json_etag_view.options = ("etag",)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- 405 views


def add_method_not_allowed_views(config: Configurator) -> None:
    """Answer 405 with ``Allow`` for methods a declared route does not serve.

    Called once after every API view (the core's and the plugins') is declared.
    """
    allowed: dict[str, set[str]] = {}
    for op in operations(config.registry):
        allowed.setdefault(op.route_name, set()).add(op.method)
    for route_name, methods in allowed.items():
        if "GET" in methods:
            methods.add("HEAD")
        allow = ", ".join(sorted(methods))

        def not_allowed(request: Request, allow: str = allow) -> Any:
            raise ApiError(
                f"method {request.method} is not allowed here; allowed: {allow}",
                code="method_not_allowed",
                status=405,
                headers={"Allow": allow},
            )

        config.add_view(not_allowed, route_name=route_name, permission=NO_PERMISSION_REQUIRED)


# ------------------------------------------------------------------------ the document

_ERROR_TEXT = {
    400: "The request cannot be parsed.",
    401: "Authentication required.",
    403: "Not allowed.",
    404: "No such resource.",
    405: "Method not allowed.",
    409: "Conflicts with the current state.",
    410: "Gone: the resource no longer holds its content (an archived version's files).",
    413: "Request body too large.",
    415: "Unsupported media type.",
    416: "Range not satisfiable.",
    422: "A value breaks a rule.",
    429: "Too many requests.",
    500: "Internal error.",
    503: "Temporarily unavailable.",
    507: "Insufficient storage.",
}
_EMPTY_TEXT = {
    302: "Found elsewhere: follow Location.",
    304: "Not modified.",
}
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_PATH_PARAM_REGEX = re.compile(r"\{(\w+):([^}]*)\}")


def _multi_segment(pattern: str) -> set[str]:
    """Path parameters whose regex lets them span segments (``{path:.*}``): the document
    marks them ``x-multi-segment``."""
    return {name for name, regex in _PATH_PARAM_REGEX.findall(pattern)
            if re.fullmatch(regex, "a/b")}
_BINARY = {"type": "string", "format": "binary"}


def _anonymous_allowed(registry: Any, permission: str, pattern: str) -> bool:
    """Whether callers without credentials may use an operation of that permission on a
    route of that pattern, as the registry's security policy decides (its
    ``allows_anonymously``; no policy lets nobody in)."""
    policy = registry.get(keys.SECURITY_POLICY)
    if policy is None:
        return False
    return policy.allows_anonymously(permission, model_scoped="{model}" in pattern)


def openapi_document(
    registry: Any, route_patterns: dict[str, str], title: str, version: str
) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of every declared operation."""
    ops = operations(registry)
    models = {ErrorOut}
    for op in ops:
        models.update(m for m in (op.body, op.response) if m is not None)
        models.update(schema for _status, schema in op.others)
    keyed = sorted(models, key=lambda m: m.__name__)
    refs, defs = models_json_schema(
        [(m, "serialization") for m in keyed] + [(m, "validation") for m in keyed],
        ref_template="#/components/schemas/{model}",
    )

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]

    error_ref = ref(ErrorOut, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        pattern = route_patterns[op.route_name]
        path = _PATH_PARAM.sub(r"{\1}", pattern)
        multi = _multi_segment(pattern)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
             **({"x-multi-segment": True} if name in multi else {})}
            for name in _PATH_PARAM.findall(pattern)
        ]
        parameters += [
            {"name": p.name, "in": "query", "required": False, "description": p.description,
             "schema": p.schema}
            for p in op.params
        ]
        responses: dict[str, Any] = {}
        for status in (op.status, *op.also):
            if op.response_media is not None:
                responses[str(status)] = {
                    "description": "The content.",
                    "content": {op.response_media: {"schema": _BINARY}},
                }
            elif op.response is None:
                responses[str(status)] = {"description": "Done."}
            else:
                responses[str(status)] = {
                    "description": "Success.",
                    "content": {
                        "application/json": {"schema": ref(op.response, "serialization")}
                    },
                }
        for status, schema in op.others:
            responses[str(status)] = {
                "description": "Success.",
                "content": {"application/json": {"schema": ref(schema, "serialization")}},
            }
        for status in op.empty:
            responses[str(status)] = {"description": _EMPTY_TEXT.get(status, "No body.")}
        protected = op.permission != NO_PERMISSION_REQUIRED
        # Every protected operation may be refused: 401 without valid credentials, 403
        # when the caller may not (404 hides a model the caller may not read), 429 while
        # the client is blocked for failing authentication too often.  Any may answer 503
        # while the database cannot be reached.
        statuses = {400, 404, 500, 503, *op.errors, *(e for p in op.params for e in p.errors)}
        if protected:
            statuses.update((401, 403, 429))
        if op.body is not None:
            statuses.update(BODY_ERRORS)
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error."),
                "content": {"application/json": {"schema": error_ref}},
            }
        operation: dict[str, Any] = {
            "operationId": f"{op.route_name}.{op.method.lower()}",
            "summary": op.summary,
            "tags": list(op.tags),
            "parameters": parameters,
            "responses": responses,
            "x-permission": op.permission,
        }
        if protected:
            # An empty requirement: callers without a token may do this too, where
            # modelreg.auth.anonymous allows it on this server.
            anonymous = _anonymous_allowed(registry, op.permission, pattern)
            operation["security"] = [{"bearer": []}, *([{}] if anonymous else [])]
        if op.body_media is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {op.body_media: {"schema": _BINARY}},
            }
        elif op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        paths.setdefault(path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: 'Authorization: Bearer mr_<id>_<secret>'.",
                }
            },
        },
    }
