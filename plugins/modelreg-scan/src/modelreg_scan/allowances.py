"""Allowances: named globals that pickles of some models may import, granted by an operator.

Frameworks write pickles that import code by design: MLflow's pyfunc models
(``python_model.pkl``, cloudpickle), scikit-learn estimators, the Hugging Face Trainer's
``training_args.bin``.  The scanner rejects them (fail closed); an *allowance* names the
globals (``module:qualname`` patterns, matched separately) that the pickles of the models
matching a glob may import.  Allowances come from settings (``modelreg.scan.allow.<name>``)
or from the admin API (:mod:`.views`), live in the plugin's table ``scan_allowances``, and
every change and every use of one is written to the registry's audit log.

This module runs in the registry's processes (app and worker), never in the scan
subprocess: the subprocess reports every import, and :func:`apply` decides afterwards which
of them an allowance permits.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from modelreg.api import Finding, record_audit

from .tables import API, SETTINGS, allowances

log = logging.getLogger(__name__)

#: Settings that define allowances: ``modelreg.scan.allow.<name> = <model glob> : <globals>``.
SETTING_PREFIX = "modelreg.scan.allow."
#: The findings an allowance can turn into ``info``: a pickle's import of a global.
IMPORT_CODES = frozenset({"pickle_dangerous_import", "pickle_unknown_import"})
#: The code of a finding an allowance permitted (its ``details`` name the allowance).
ALLOWED_CODE = "pickle_import_allowed"
#: Actors of the audit events this module writes.
SETTINGS_ACTOR = "system:settings"
SCAN_ACTOR = "system:scan"
#: Audit actions and the target type of allowances.
TARGET_TYPE = "scan_allowance"
CREATED, UPDATED, DELETED = ("scan_allowance.created", "scan_allowance.updated",
                             "scan_allowance.deleted")
USED = "scan.allowance_used"

MAX_GLOBALS = 100
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?")
_MODELS = re.compile(r"[A-Za-z0-9._*?-]{1,200}")
# A module pattern names its top-level package literally (no "*:*", no "s*"); the later
# parts may hold the wildcards * and ?.  fnmatch's [...] classes are not accepted.
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_*?-]+)*")
_QUALNAME = re.compile(r"[A-Za-z0-9_*?<>]+(?:\.[A-Za-z0-9_*?<>]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SETTING_VALUE = re.compile(r"\s*(\S+)\s+:\s+(.*)", re.DOTALL)


def utcnow() -> dt.datetime:
    """The current time in UTC, naive (how the table stores times)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def parse_global(text: str) -> tuple[str, str]:
    """``"sklearn.*:LogisticRegression"`` -> ``("sklearn.*", "LogisticRegression")``.

    :raises ValueError: when it is not ``<module pattern>:<qualified-name pattern>``.
    """
    module, colon, qualname = str(text).partition(":")
    if not colon or not _MODULE.fullmatch(module) or not _QUALNAME.fullmatch(qualname):
        raise ValueError(
            f"{text!r} is not <module>:<qualified name> (e.g. "
            "sklearn.linear_model._logistic:LogisticRegression or sklearn.*:*); the module "
            "must start with a package named without wildcards; * and ? match any "
            "characters of the module (dots too) and of one dotted part of the name")
    return module, qualname


def qualname_matches(qualname: str, pattern: str) -> bool:
    """Whether a qualified name matches a pattern part by dotted part: ``*`` and ``?``
    never cross a dot, and never match a ``__dunder__`` part unless the pattern writes it
    out.  An unpickler resolves ``a.b`` (protocol 4) by ``getattr`` from the module, so
    ``pkg.mod:*`` must not reach ``os.system`` through an ``import os`` in ``pkg.mod``, nor
    ``Model.__init__.__globals__``."""
    names, patterns = qualname.split("."), pattern.split(".")
    if len(names) != len(patterns):
        return False
    for name, part in zip(names, patterns, strict=True):
        if name == part:
            continue
        if name.startswith("__") and name.endswith("__"):
            return False
        if not fnmatch.fnmatchcase(name, part):
            return False
    return True


@dataclass(frozen=True)
class Allowance:
    """Globals that the pickles of the models matching a glob may import.

    :ivar name: the allowance's name (``a-z``, ``0-9``, ``.``, ``_``, ``-``).
    :ivar models: a glob of model names (``fnmatch``, case-sensitive: ``fraud-*``).
    :ivar globals: ``module:qualname`` patterns; module and qualified name are matched
        separately, so ``pkg.*:*`` never permits module ``os`` with name ``system``; in
        the module ``*`` and ``?`` match dots too, in the qualified name they stay within
        one dotted part (:func:`qualname_matches`).
    :ivar description: why it exists.
    :ivar source: ``settings`` or ``api``.
    """

    name: str
    models: str
    globals: tuple[str, ...]
    description: str = ""
    source: str = API
    created_by: str | None = None
    created_at: dt.datetime | None = None

    def permits(self, model: str, module: str, qualname: str) -> str | None:
        """The pattern of this allowance that permits ``module:qualname`` in a pickle of
        ``model``, or ``None``."""
        if not fnmatch.fnmatchcase(model, self.models):
            return None
        for pattern in self.globals:
            module_pattern, qualname_pattern = parse_global(pattern)
            if (fnmatch.fnmatchcase(module, module_pattern)
                    and qualname_matches(qualname, qualname_pattern)):
                return pattern
        return None

    def as_json(self) -> dict[str, Any]:
        """The allowance as the API shows it and the audit log records it."""
        return {"name": self.name, "models": self.models, "globals": list(self.globals),
                "description": self.description, "source": self.source,
                "created_by": self.created_by,
                "created_at": (None if self.created_at is None
                               else self.created_at.isoformat(timespec="seconds") + "Z")}

    @classmethod
    def from_row(cls, row: Any) -> Allowance:
        """The allowance of a ``scan_allowances`` row."""
        return cls(name=row.name, models=row.models, globals=tuple(row.globals),
                   description=row.description, source=row.source,
                   created_by=row.created_by, created_at=row.created_at)


def problems_of(name: Any, models: Any, globals_: Any, description: Any) -> list[dict[str, str]]:
    """Every problem of an allowance's fields, as ``{"field", "code", "message"}``."""
    problems: list[dict[str, str]] = []
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append({"field": "name", "code": "invalid_name", "message":
                         "the name is 1 to 100 characters of a-z, 0-9, '.', '_' and '-', "
                         "starting and ending with a letter or digit"})
    if not isinstance(models, str) or not _MODELS.fullmatch(models):
        problems.append({"field": "models", "code": "invalid_models", "message":
                         "models is a glob of model names (letters, digits, '.', '_', '-', "
                         "'*' and '?'; at most 200 characters), e.g. \"fraud-*\""})
    if (not isinstance(globals_, list) or not 1 <= len(globals_) <= MAX_GLOBALS
            or not all(isinstance(g, str) for g in globals_)):
        problems.append({"field": "globals", "code": "invalid_globals", "message":
                         f"globals is a list of 1 to {MAX_GLOBALS} \"module:qualname\" "
                         "patterns"})
    else:
        for index, text in enumerate(globals_):
            try:
                parse_global(text)
            except ValueError as exc:
                problems.append({"field": f"globals/{index}", "code": "invalid_global",
                                 "message": str(exc)})
    if (not isinstance(description, str) or len(description) > 500
            or _CONTROL.search(description)):
        problems.append({"field": "description", "code": "invalid_description",
                         "message": "the description is text of at most 500 characters, "
                                    "without control characters"})
    return problems


def from_settings(settings: dict[str, Any]) -> dict[str, Allowance]:
    """The allowances ``modelreg.scan.allow.<name> = <model glob> : <module:qualname> ...``
    define, by name.

    :raises ValueError: naming the setting whose name or value is wrong.
    """
    found: dict[str, Allowance] = {}
    for key in sorted(settings):
        if not key.startswith(SETTING_PREFIX):
            continue
        name = key[len(SETTING_PREFIX):]
        match = _SETTING_VALUE.fullmatch(str(settings[key]))
        if match is None:
            raise ValueError(f"{key}: write '<model glob> : <module>:<qualname> ...' (a colon "
                             "between spaces after the glob), e.g. 'fraud-* : "
                             "sklearn.*:*'")
        models, globals_ = match.group(1), match.group(2).split()
        problems = problems_of(name, models, globals_, "")
        if problems:
            raise ValueError(f"{key}: " + "; ".join(p["message"] for p in problems))
        found[name] = Allowance(name, models, tuple(globals_), f"setting {key}", SETTINGS)
    return found


# ------------------------------------------------------------------------ database

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()
_synced: set[tuple[str, str]] = set()


def get_engine(settings: dict[str, Any]) -> sa.Engine:
    """The plugin's engine for the registry's database (``sqlalchemy.url``), one per URL
    (the hooks hand plugins settings, not sessions)."""
    url = settings["sqlalchemy.url"]
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if sa.engine.make_url(url).get_backend_name() == "sqlite":
                kwargs = {"connect_args": {"timeout": 30, "check_same_thread": False}}
            engine = _engines[url] = sa.create_engine(url, **kwargs)
        return engine


def dispose_engines() -> None:
    """Close the plugin's database connections (tests, and processes that end)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _synced.clear()


def tables_exist(engine: sa.Engine) -> bool:
    """Whether the plugin's migration ran on this database."""
    return sa.inspect(engine).has_table(allowances.name)


def _stored(conn: sa.Connection) -> dict[str, Allowance]:
    return {row.name: Allowance.from_row(row)
            for row in conn.execute(sa.select(allowances).order_by(allowances.c.name))}


def sync_settings(engine: sa.Engine, settings: dict[str, Any]) -> None:
    """Make the table's ``settings`` allowances what the settings say, writing an audit
    event (actor ``system:settings``) for each one created, changed or removed, in one
    transaction.  Done once per process and settings; an allowance of the API keeps its
    name (the setting of the same name is ignored, with an error in the log)."""
    wanted = from_settings(settings)
    fingerprint = hashlib.sha256(json.dumps(
        [a.as_json() for a in wanted.values()], sort_keys=True).encode()).hexdigest()
    key = (str(engine.url), fingerprint)
    if key in _synced:
        return
    try:
        with engine.begin() as conn:
            stored = _stored(conn)
            for name, allowance in wanted.items():
                old = stored.get(name)
                if old is not None and old.source != SETTINGS:
                    log.error("modelreg-scan: the setting %s%s is ignored: an allowance of "
                              "that name was made through the API", SETTING_PREFIX, name)
                    continue
                if old is None:
                    conn.execute(sa.insert(allowances).values(
                        name=name, models=allowance.models, globals=list(allowance.globals),
                        description=allowance.description, source=SETTINGS,
                        created_by=SETTINGS_ACTOR, created_at=utcnow()))
                    record_audit(conn, action=CREATED, target_type=TARGET_TYPE, target=name,
                                 actor=SETTINGS_ACTOR, after=_summary(allowance))
                elif _summary(old) != _summary(allowance):
                    conn.execute(sa.update(allowances).where(allowances.c.name == name).values(
                        models=allowance.models, globals=list(allowance.globals),
                        description=allowance.description))
                    record_audit(conn, action=UPDATED, target_type=TARGET_TYPE, target=name,
                                 actor=SETTINGS_ACTOR, before=_summary(old),
                                 after=_summary(allowance))
            for name, old in stored.items():
                if old.source == SETTINGS and name not in wanted:
                    conn.execute(sa.delete(allowances).where(allowances.c.name == name))
                    record_audit(conn, action=DELETED, target_type=TARGET_TYPE, target=name,
                                 actor=SETTINGS_ACTOR, before=_summary(old))
    except IntegrityError:  # another process synced the same settings at the same time
        log.info("modelreg-scan: allowances were synced by another process")
    _synced.add(key)


def _summary(allowance: Allowance) -> dict[str, Any]:
    return {"models": allowance.models, "globals": list(allowance.globals),
            "description": allowance.description, "source": allowance.source}


def stored_allowances(engine: sa.Engine) -> list[Allowance]:
    """Every allowance in the table, by name."""
    with engine.connect() as conn:
        return list(_stored(conn).values())


# ------------------------------------------------------------------------ scanning

def _import_of(finding: Finding) -> tuple[str, str] | None:
    details = finding.details or {}
    module, name = details.get("module"), details.get("name")
    if finding.code in IMPORT_CODES and isinstance(module, str) and isinstance(name, str):
        return module, name
    return None


def _rejecting(settings: dict[str, Any]) -> set[str]:
    # the core's modelreg.scan.reject (see docs/operations.md), default "error"
    value = settings.get("modelreg.scan.reject")
    return set(("error" if value is None else str(value)).replace(",", " ").lower().split())


def apply(model: dict[str, Any], version: dict[str, Any], file: dict[str, Any],
          findings: list[Finding], settings: dict[str, Any]) -> list[Finding]:
    """``findings`` of one file with every import an allowance permits turned into an
    ``info`` finding ``pickle_import_allowed`` that names the allowance.

    When the file then has no finding that rejects (``modelreg.scan.reject``), it passes
    only thanks to the allowances used: each is recorded in the audit log
    (``scan.allowance_used``, target the version ``<model>/<number>``) before the findings
    are returned.  Fails closed: without the table or a database, or when the audit event
    cannot be written, the findings are returned unchanged.
    """
    if not any(_import_of(f) for f in findings) or "sqlalchemy.url" not in settings:
        return findings  # (no database: a hook called directly, as in unit tests)
    try:
        engine = get_engine(settings)
        if not tables_exist(engine):
            log.warning("modelreg-scan: table scan_allowances missing (run modelreg db "
                        "upgrade); no allowance applies")
            return findings
        sync_settings(engine, settings)
        candidates = [a for a in stored_allowances(engine)
                      if fnmatch.fnmatchcase(model["name"], a.models)]
    except (KeyError, ValueError, SQLAlchemyError):
        log.exception("modelreg-scan: allowances unavailable; no allowance applies")
        return findings
    result: list[Finding] = []
    used: dict[str, set[str]] = {}
    for finding in findings:
        found = _import_of(finding)
        hit = None
        if found is not None:
            hit = next(((a, p) for a in candidates
                        if (p := a.permits(model["name"], *found)) is not None), None)
        if hit is None:
            result.append(finding)
            continue
        allowance, pattern = hit
        used.setdefault(allowance.name, set()).add(f"{found[0]}:{found[1]}")
        result.append(replace(
            finding, code=ALLOWED_CODE, severity="info",
            message=f"{finding.message} (permitted by the allowance {allowance.name!r})",
            details={**(finding.details or {}), "allowance": allowance.name,
                     "allowance_global": pattern, "original_code": finding.code}))
    rejecting = _rejecting(settings)
    if not used or any(str(f.severity).lower() in rejecting for f in result):
        return result if used else findings
    target = f"{model['name']}/{version.get('number')}"
    try:
        with engine.begin() as conn:
            for name, names in sorted(used.items()):
                record_audit(conn, action=USED, target_type="version", target=target,
                             actor=SCAN_ACTOR, after={
                                 "allowance": name, "file": file.get("path"),
                                 "sha256": file.get("sha256"), "globals": sorted(names)})
    except SQLAlchemyError:
        log.exception("modelreg-scan: the use of an allowance could not be audited; "
                      "it is not applied")
        return findings
    return result
