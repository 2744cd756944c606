"""The pages of the web UI: ``/`` (home, for browsers) and everything under ``/ui/``.

Every page reads and writes through ``request.modelreg`` (:class:`modelreg.api.Registry`),
so grants apply exactly as in the REST API: a model the caller may not read answers the
same "not found" page as a model that does not exist.  Views are registered with
``NO_PERMISSION_REQUIRED`` because an HTML page answers a refusal with a page (sign in, not
found), not with the API's JSON; each one asks ``request.modelreg`` before showing anything.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup
from pyramid.config import Configurator
from pyramid.events import NewResponse
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.renderers import render_to_response
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from modelreg.api import (
    ADMIN,
    READ,
    WRITE,
    ApiError,
    BadRequest,
    add_error_shape,
    add_read_only_view,
    plugin_hooks,
)

from . import cards, sessions

#: Names under /ui/ the UI itself uses; plugin pages (``WebPage.name``) must avoid them.
RESERVED = ("static", "signin", "signout", "models", "tokens", "admin", "p")
#: Headers of every UI page (file downloads have a stricter CSP of their own).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
PAGE_SIZE = 50
STATUSES = ("draft", "validating", "ready", "rejected", "archived")
Page = Callable[[Request], Any]
#: The routes whose ``GET`` (and ``HEAD``) page only reads the database: served outside
#: pyramid_tm, taking read turns (``modelreg.api.add_read_only_view``; docs/plugins.md).
#: Not ``web.model`` (it reads the model card's bytes from the blob store) nor ``web.file``
#: (it sends a file); ``signout``, ``revoke`` and ``alias`` are ``POST``s.
READ_ONLY_PAGES = ("web.home", "web.models", "web.signin", "web.tokens", "web.admin",
                   "web.audit", "web.compare", "web.version")


# --------------------------------------------------------------------------- rendering

def _nav(request: Request, me: dict[str, Any] | None) -> list[dict[str, str]]:
    links = [{"title": "Models", "url": request.route_path("web.models")}]
    if me is not None:
        links.append({"title": "Tokens", "url": request.route_path("web.tokens")})
    if me is not None and me["admin"]:
        links.append({"title": "Admin", "url": request.route_path("web.admin")})
        links.append({"title": "Audit log", "url": request.route_path("web.audit")})
    pages = []
    for group in _hook(request).modelreg_web_pages(settings=request.registry.settings):
        pages.extend(group or ())
    for page in sorted(pages, key=lambda p: (p.order, p.name)):
        if page.permission is not None and not request.modelreg.allows(page.permission, None):
            continue
        url = (request.route_path(page.route_name) if page.route_name
               else f"{sessions.PREFIX}{quote(page.name)}")
        links.append({"title": page.title, "url": url})
    return links


def _hook(request: Request) -> Any:
    """The plugin manager's hook relay."""
    return plugin_hooks(request.registry)


def when(value: str | None) -> Markup:
    """An API timestamp as ``<time>``: minutes in UTC shown, the exact value kept."""
    if not value:
        return Markup("&ndash;")
    shown = value[:16].replace("T", " ") + " UTC"
    return Markup('<time datetime="{}">{}</time>').format(value, shown)


def render(request: Request, template: str, status: int = 200, **values: Any) -> Response:
    """Render ``template`` with the page's common values (caller, navigation, CSRF)."""
    me = request.environ.get("modelreg_web.me")
    values.update(me=me, nav=_nav(request, me), when=when, csrf=sessions.csrf_token(request),
                  signed_in=sessions.current(request) is not None)
    response = render_to_response(f"modelreg_web:templates/{template}", values,
                                  request=request)
    response.status_int = status
    return response


def _sections(request: Request, page: str, subject: dict[str, Any]) -> list[Any]:
    found = []
    for group in _hook(request).modelreg_web_sections(page=page, subject=subject,
                                                      request=request):
        found.extend(group or ())
    return sorted(found, key=lambda s: (s.order, s.title))


def _signin_redirect(request: Request, message: str | None = None) -> HTTPSeeOther:
    query = {"next": request.path_qs}
    if message:
        query["message"] = message
    return HTTPSeeOther(request.route_path("web.signin", _query=query))


def page(view: Page) -> Page:
    """Run ``view`` with the caller known (``request.environ['modelreg_web.me']``) and
    answer the API's refusals as pages: 401 signs in (ending a session whose token the
    core refused), 404 and 403 and the rest render an error page with that status."""

    @functools.wraps(view)
    def wrapper(request: Request) -> Any:
        try:
            request.environ["modelreg_web.me"] = request.modelreg.whoami()
            if request.method == "POST" and not sessions.csrf_ok(request):
                return render(request, "error.jinja2", status=403, title="Form refused",
                              message="This form was refused: its CSRF token is missing or "
                                      "wrong. Reload the page and send it again.")
            return view(request)
        except ApiError as exc:
            if exc.status == 401:
                had_session = sessions.current(request) is not None
                response = _signin_redirect(
                    request, f"Your session ended: {exc.message}" if had_session else None)
                if had_session and _read_only(request):
                    # Its session cannot write: the cookie goes, and the row, useless
                    # without the cookie's key and holding a refused token, stays until it
                    # expires (sessions.start deletes expired rows).
                    sessions.forget(request, response)
                elif had_session:
                    sessions.end(request, response)
                return response
            request.environ.setdefault("modelreg_web.me", None)
            title = {404: "Not found", 403: "Not allowed"}.get(exc.status, "Request refused")
            return render(request, "error.jinja2", status=exc.status, title=title,
                          message=exc.message)

    return wrapper


def _read_only(request: Request) -> bool:
    """Whether ``request`` is one of the read-only pages' (:data:`READ_ONLY_PAGES`)."""
    route = request.matched_route
    return (request.method in ("GET", "HEAD") and route is not None
            and route.name in READ_ONLY_PAGES)


def _file_url(request: Request, model: str, ref: Any, path: str) -> str:
    return request.route_path("web.file", model=model, ref=str(ref), path=path.split("/"))


# ------------------------------------------------------------------------------- pages

def _search_filter(q: str, advanced: str) -> str | None:
    parts = []
    words = "".join(c for c in q if c not in "'%\\").strip()
    if words:
        like = f"'%{words}%'"
        parts.append(f"(name LIKE {like} OR description LIKE {like})")
    if advanced.strip():
        parts.append(f"({advanced.strip()})")
    return " AND ".join(parts) or None


@page
def models_page(request: Request) -> Any:
    """Models (the home page): search, filter, sort, cursor paging."""
    if request.path == "/" and "text/html" not in request.headers.get("Accept", ""):
        raise HTTPNotFound()  # API clients keep the JSON 404 at /
    me = request.environ["modelreg_web.me"]
    if me is None and not request.modelreg.allows(READ, None):
        return _signin_redirect(request)
    q = request.GET.get("q", "")[:200]
    advanced = request.GET.get("filter", "")[:2000]
    order = request.GET.get("order_by", "name")
    if order not in ("name", "name desc", "created", "created desc", "updated",
                     "updated desc"):
        order = "name"
    token = request.GET.get("page_token") or None
    error = None
    result: dict[str, Any] = {"models": [], "next_page_token": None}
    try:
        result = request.modelreg.search_models(filter=_search_filter(q, advanced),
                                                order_by=order, page_size=PAGE_SIZE,
                                                page_token=token)
    except BadRequest as exc:
        error = exc.message
    next_url = None
    if result["next_page_token"]:
        next_url = request.route_path("web.models", _query={
            "q": q, "filter": advanced, "order_by": order,
            "page_token": result["next_page_token"]})
    return render(request, "models.jinja2", status=400 if error else 200, q=q,
                  advanced=advanced, order=order, error=error, models=result["models"],
                  next_url=next_url, first_page=token is None,
                  can_create=request.modelreg.allows(WRITE, None))


def _readme_path(files: list[dict[str, Any]]) -> str | None:
    for file in files:
        if file["path"].lower() == "readme.md":
            return file["path"]
    return None


def _card(request: Request, model: str, number: int, files: list[dict[str, Any]]
          ) -> str | None:
    path = _readme_path(files)
    if path is None:
        return None
    try:
        text = request.modelreg.read_file(model, number, path, max_size=cards.MAX_CARD_BYTES)
    except ApiError as exc:
        if exc.status == 413:
            return None
        raise
    return cards.render_card(text.decode("utf-8", "replace"), base=path,
                             file_url=lambda p: _file_url(request, model, number, p))


@page
def model_page(request: Request, alias_error: str | None = None, status: int = 200) -> Any:
    """A model: its card, description, tags, aliases and their history, versions."""
    name = request.matchdict["model"]
    registry = request.modelreg
    model = registry.get_model(name)
    versions = registry.search_versions(name, page_size=PAGE_SIZE)["versions"]
    sizes = registry.version_sizes(name, [v["number"] for v in versions])
    aliases = registry.list_aliases(name)
    history = []
    for alias in aliases[:10]:
        moves = registry.alias_history(name, alias["alias"], page_size=10)["moves"]
        history.extend(moves)
    history.sort(key=lambda m: str(m.get("at") or ""), reverse=True)
    picked = request.GET.get("alias") or None
    card_version = None
    card = None
    try:
        ref = picked or "latest"
        card_version = registry.get_version(name, ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
    if card_version is not None:
        files = registry.list_files(name, card_version["number"])
        card = _card(request, name, card_version["number"], files)
    who_may = None
    if registry.allows(ADMIN, None):
        normalized = name.casefold()
        who_may = [g for g in registry.list_grants(page_size=1000)["grants"]
                   if fnmatch.fnmatchcase(normalized, str(g.get("pattern", "")).casefold())]
    return render(request, "model.jinja2", status=status, model=model, versions=versions,
                  aliases=aliases, history=history[:20], card=card, sizes=sizes,
                  card_version=card_version, picked=picked,
                  can_write=registry.allows(WRITE, name), alias_error=alias_error,
                  who_may=who_may,
                  ready=[v["number"] for v in versions if v["status"] == "ready"],
                  sections=_sections(request, "model", model))


@page
def alias_form(request: Request) -> Any:
    """Point an alias at a version (the model page's form); back to the model page."""
    name = request.matchdict["model"]
    alias = request.POST.get("alias", "").strip()
    number = request.POST.get("version", "").strip()
    try:
        if not number.isdigit():
            raise BadRequest("choose a version number", code="invalid_version")
        request.modelreg.set_alias(name, alias, int(number))
    except ApiError as exc:
        if exc.status in (401, 404):
            raise
        request.tm.abort()
        request.tm.begin()
        return model_page.__wrapped__(request, alias_error=exc.message, status=exc.status)
    url = request.route_path("web.model", model=name, _anchor="aliases")
    return HTTPSeeOther(url)


def _tree(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Files as nested folders: ``{"files": [...], "folders": {name: tree}}``."""
    root: dict[str, Any] = {"files": [], "folders": {}}
    for file in sorted(files, key=lambda f: f["path"]):
        node = root
        *folders, _leaf = file["path"].split("/")
        for folder in folders:
            node = node["folders"].setdefault(folder, {"files": [], "folders": {}})
        node["files"].append(file)
    return root


@page
def version_page(request: Request) -> Any:
    """A version: status, problems, metadata, lineage, files, digest, fetch snippets."""
    name = request.matchdict["model"]
    registry = request.modelreg
    version = registry.get_version(name, request.matchdict["ref"])
    files = registry.list_files(name, version["number"])
    digest = version.get("digest") or ""
    ref = f"{version['model']}@sha256:{digest.removeprefix('sha256:')}" if digest else None
    base = request.application_url
    snippets = []
    if ref is not None:
        snippets = [
            {"title": "modelreg CLI", "code": f"modelreg pull {ref} ./{version['model']}"},
            {"title": "Python",
             "code": "from modelreg_client import Client\n\n"
                     f"with Client({base!r}, token) as client:\n"
                     f"    path = client.path({ref!r})"},
        ]
    return render(request, "version.jinja2", version=version, files=files,
                  tree=_tree(files), ref=ref, snippets=snippets,
                  lineage=version.get("lineage") or {},
                  sections=_sections(request, "version", version))


@page
def file_download(request: Request) -> Any:
    """A file of a version, as an attachment that cannot run script in the UI's origin."""
    name = request.matchdict["model"]
    path = "/".join(request.matchdict["path"])
    response = request.modelreg.download(name, request.matchdict["ref"], path)
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "(value)": json.dumps(value, sort_keys=True, ensure_ascii=False)}


@page
def compare_page(request: Request) -> Any:
    """Two versions side by side: metadata and files that differ."""
    name = request.matchdict["model"]
    registry = request.modelreg
    model = registry.get_model(name)
    a_ref, b_ref = request.GET.get("a", ""), request.GET.get("b", "")
    rows: list[dict[str, Any]] = []
    file_rows: list[dict[str, Any]] = []
    a = b = None
    if a_ref and b_ref:
        a, b = registry.get_version(name, a_ref), registry.get_version(name, b_ref)
        fa = _flatten({"metadata": a["metadata"], "lineage": a["lineage"], "tags": a["tags"]})
        fb = _flatten({"metadata": b["metadata"], "lineage": b["lineage"], "tags": b["tags"]})
        for key in sorted(set(fa) | set(fb)):
            rows.append({"key": key, "a": fa.get(key), "b": fb.get(key),
                         "same": fa.get(key) == fb.get(key)})
        files_a = {f["path"]: f for f in registry.list_files(name, a["number"])}
        files_b = {f["path"]: f for f in registry.list_files(name, b["number"])}
        for path in sorted(set(files_a) | set(files_b)):
            x, y = files_a.get(path), files_b.get(path)
            state = ("added" if x is None else "removed" if y is None
                     else "same" if x["sha256"] == y["sha256"] else "changed")
            file_rows.append({"path": path, "a": x, "b": y, "state": state})
    versions = registry.search_versions(name, page_size=PAGE_SIZE)["versions"]
    return render(request, "compare.jinja2", model=model, a=a, b=b, rows=rows,
                  file_rows=file_rows, versions=versions, a_ref=a_ref, b_ref=b_ref)


# ------------------------------------------------------------------------- signing in

@page
def signin_page(request: Request) -> Any:
    """Paste an API token; it becomes this browser's session."""
    target = request.params.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    error = None
    if request.method == "POST":
        token = request.POST.get("token", "").strip()
        try:
            identity = request.modelreg.identify_token(token)
        except ApiError as exc:
            error = exc.message
        else:
            response = HTTPSeeOther(target)
            sessions.end(request, response)
            sessions.start(request, response, token, identity)
            return response
    return render(request, "signin.jinja2", status=401 if error else 200, error=error,
                  message=request.GET.get("message"), next=target)


@page
def signout(request: Request) -> Any:
    """End this browser's session (the token itself stays valid)."""
    response = HTTPSeeOther(request.route_path("web.signin",
                                               _query={"message": "You signed out."}))
    sessions.end(request, response)
    return response


# ------------------------------------------------------------------ tokens and admin

def _allowed_scopes(me: dict[str, Any]) -> list[str]:
    """The scopes a token made in this session may have, never above the session's own:
    each plain level up to the session token's highest plain scope, and the session
    token's scopes limited to a pattern (``write:fraud-*``) as they are."""
    order = ["read", "write", "admin"]
    scopes = me.get("scopes")
    if scopes is None:  # an identity from a plugin (single sign-on): the principal's
        return order if me["admin"] else order[:2]
    plain = [order.index(s) for s in scopes if s in order]
    allowed = order[:max(plain, default=-1) + 1]
    return allowed + [s for s in scopes if s not in order]


@page
def tokens_page(request: Request) -> Any:
    """The caller's own tokens: create one (shown once), revoke."""
    me = request.environ["modelreg_web.me"]
    if me is None:
        return _signin_redirect(request)
    registry = request.modelreg
    allowed = _allowed_scopes(me)
    principal = me["name"]
    if me["admin"] and request.params.get("principal"):
        principal = request.params["principal"]  # admins: anyone's tokens
    created = None
    error = None
    status = 200
    if request.method == "POST":
        scope = request.POST.get("scope", "read")
        days = request.POST.get("expires_in_days", "").strip()
        try:
            if scope not in allowed:
                raise BadRequest(f"a token made here cannot have scope {scope!r}: this "
                                 f"session's token allows {', '.join(allowed) or 'none'}",
                                 code="token_scope")
            created = registry.create_token(
                principal, scopes=[scope],
                description=request.POST.get("description", "")[:200],
                expires_in_days=int(days) if days.isdigit() else None)
            status = 201
        except ApiError as exc:
            error, status = exc.message, exc.status
    tokens = registry.list_tokens(principal, page_size=200)["tokens"]
    response = render(request, "tokens.jinja2", status=status, tokens=tokens,
                      created=created, error=error, allowed=allowed, principal=principal,
                      own=principal == me["name"])
    response.cache_control = "no-store"
    return response


@page
def revoke_token(request: Request) -> Any:
    """Revoke one of the caller's tokens (or any, for an admin)."""
    revoked = request.modelreg.revoke_token(request.matchdict["token"])
    query = {} if revoked["principal"] == request.modelreg.caller else {
        "principal": revoked["principal"]}
    return HTTPSeeOther(request.route_path("web.tokens", _query=query))


@page
def admin_page(request: Request) -> Any:
    """Principals, groups, grants (global admins only), and plugins' admin sections; its
    forms add a principal, add a grant, delete a grant."""
    registry = request.modelreg
    registry.require(ADMIN, None)
    error, status = None, 200
    if request.method == "POST":
        form = request.POST
        try:
            action = form.get("action")
            if action == "principal":
                registry.create_principal(form.get("name", "").strip(),
                                          admin=form.get("admin") == "on")
            elif action == "grant":
                subject = form.get("subject", "").strip()
                group = subject.removeprefix("group:") if subject.startswith("group:") \
                    else None
                registry.create_grant(pattern=form.get("pattern", "").strip(),
                                      level=form.get("level", ""),
                                      principal=None if group else subject, group=group)
            elif action == "revoke-grant":
                registry.delete_grant(form.get("grant", ""))
            else:
                raise BadRequest("unknown form", code="invalid_form")
            return HTTPSeeOther(request.route_path("web.admin"))
        except ApiError as exc:
            if exc.status in (401,):
                raise
            request.tm.abort()
            request.tm.begin()
            error, status = exc.message, exc.status
    return render(request, "admin.jinja2", status=status, error=error,
                  principals=registry.list_principals(page_size=500)["principals"],
                  groups=registry.list_groups(page_size=500)["groups"],
                  grants=registry.list_grants(page_size=1000)["grants"],
                  sections=_sections(request, "admin", {}))


AUDIT_FILTERS = ("actor", "action", "target", "target_type", "model", "since", "until")


@page
def audit_page(request: Request) -> Any:
    """The audit log with filters (global admins only)."""
    registry = request.modelreg
    registry.require(ADMIN, None)
    filters = {k: request.GET.get(k, "").strip() for k in AUDIT_FILTERS}
    error = None
    result: dict[str, Any] = {"events": [], "next_page_token": None}
    try:
        result = registry.audit(page_size=PAGE_SIZE,
                                page_token=request.GET.get("page_token") or None,
                                **{k: v for k, v in filters.items() if v})
    except ApiError as exc:
        if exc.status not in (400, 422):
            raise
        error = exc.message
    next_url = None
    if result["next_page_token"]:
        next_url = request.path + "?" + urlencode(
            {**filters, "page_token": result["next_page_token"]})
    return render(request, "audit.jinja2", status=400 if error else 200, filters=filters,
                  events=result["events"], error=error, next_url=next_url)


# -------------------------------------------------------------------------- wiring

def error_page(request: Request, error: ApiError) -> Response:
    """Errors under ``/ui/`` that no page caught (an unknown page, a refused method, an
    internal error) as an HTML page (``add_error_shape``); it asks nothing of the caller, so
    it renders whatever refused the request."""
    title = {404: "Not found", 405: "Not allowed", 500: "Something went wrong"}.get(
        error.status, "Request refused")
    response = render_to_response(
        "modelreg_web:templates/error.jinja2",
        {"title": title, "message": error.message, "me": None, "nav": [
            {"title": "Models", "url": request.route_path("web.models")}],
         "csrf": "", "signed_in": False, "when": when}, request=request)
    response.status_int = error.status
    return response


def security_headers(event: Any) -> None:
    """CSP and friends on every UI response (downloads keep their own, stricter CSP)."""
    request = event.request
    if not sessions.is_ui_path(request):
        return
    headers = event.response.headers
    if request.environ.get("PATH_INFO") == "/" and "text/html" not in event.response.content_type:
        return  # the core's JSON 404 for API clients
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if event.response.content_type == "text/html":
        headers.setdefault("Cache-Control", "no-store")


def includeme(config: Configurator) -> None:
    """The UI's routes, views, templates and static files."""
    config.include("pyramid_jinja2")
    p = sessions.PREFIX
    config.add_route("web.home", "/")
    config.add_route("web.models", f"{p}models")
    config.add_route("web.signin", f"{p}signin")
    config.add_route("web.signout", f"{p}signout")
    config.add_route("web.tokens", f"{p}tokens")
    config.add_route("web.revoke", p + "tokens/{token}/revoke")
    config.add_route("web.admin", f"{p}admin")
    config.add_route("web.audit", f"{p}admin/audit")
    config.add_route("web.model", p + "models/{model}")
    config.add_route("web.alias", p + "models/{model}/aliases")
    config.add_route("web.compare", p + "models/{model}/compare")
    config.add_route("web.version", p + "models/{model}/versions/{ref}")
    config.add_route("web.file", p + "models/{model}/versions/{ref}/files/*path")
    public = NO_PERMISSION_REQUIRED
    get, post = ("GET", "HEAD"), "POST"
    for route, view, methods in (
        ("web.home", models_page, get), ("web.models", models_page, get),
        ("web.signin", signin_page, (*get, post)), ("web.signout", signout, post),
        ("web.tokens", tokens_page, (*get, post)), ("web.revoke", revoke_token, post),
        ("web.admin", admin_page, (*get, post)), ("web.audit", audit_page, get),
        ("web.model", model_page, get), ("web.alias", alias_form, post),
        ("web.compare", compare_page, get), ("web.version", version_page, get),
        ("web.file", file_download, get),
    ):
        config.add_view(view, route_name=route, request_method=methods, permission=public)
    for route in READ_ONLY_PAGES:
        add_read_only_view(config, route, "GET")
    config.add_static_view(f"{p}static", "modelreg_web:static", cache_max_age=3600,
                           permission=public)
    config.add_subscriber(security_headers, NewResponse)
    add_error_shape(config, sessions.PREFIX, error_page)
