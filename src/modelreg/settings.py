"""Every ``modelreg.*`` setting of the ini file, by name, and the parsing they share.

Modules read their settings through these constants (a setting's meaning and default are
documented where it is used, and in docs/configuration.md); :func:`apply_environment` fills
settings from ``MODELREG_*`` environment variables.  The keys of the Pyramid registry are a
different thing: :mod:`modelreg.keys`.
"""

from __future__ import annotations

import os
from typing import Any

# allowed_hosts
ALLOWED_HOSTS = "modelreg.allowed_hosts"

# api
API_MAX_JSON_BODY = "modelreg.api.max_json_body"

# auth
AUTH_ALLOW_ANONYMOUS_WRITE = "modelreg.auth.allow_anonymous_write"
AUTH_ANONYMOUS = "modelreg.auth.anonymous"
AUTH_BLOCK_SECONDS = "modelreg.auth.block_seconds"
AUTH_FAILURE_WINDOW = "modelreg.auth.failure_window"
AUTH_MAX_FAILURES = "modelreg.auth.max_failures"

# metrics
METRICS_ENABLED = "modelreg.metrics.enabled"
METRICS_PUBLIC = "modelreg.metrics.public"
METRICS_TOKEN = "modelreg.metrics.token"  # noqa: S105 - a setting's name

# plugins
PLUGINS_DISABLED = "modelreg.plugins.disabled"

# policy
POLICY_MAX_VERSION_SIZE = "modelreg.policy.max_version_size"
POLICY_MODEL_NAME_PATTERN = "modelreg.policy.model_name_pattern"
POLICY_PROTECTED_ALIASES = "modelreg.policy.protected_aliases"
POLICY_QUOTA_MAX_BYTES = "modelreg.policy.quota.max_bytes"
POLICY_QUOTA_MAX_VERSIONS = "modelreg.policy.quota.max_versions"
POLICY_REQUIRED_METADATA = "modelreg.policy.required_metadata"
POLICY_REQUIRED_MODEL_TAGS = "modelreg.policy.required_model_tags"
POLICY_REQUIRED_VERSION_TAGS = "modelreg.policy.required_version_tags"
POLICY_RETENTION_ACTION = "modelreg.policy.retention.action"
POLICY_RETENTION_KEEP_LAST = "modelreg.policy.retention.keep_last"

# postgresql
POSTGRESQL_MAX_PARALLEL_WORKERS_PER_GATHER = "modelreg.postgresql.max_parallel_workers_per_gather"
POSTGRESQL_PLAN_CACHE_MODE = "modelreg.postgresql.plan_cache_mode"

# readyz
READYZ_TIMEOUT = "modelreg.readyz.timeout"

# scan
SCAN_BATCH_SECONDS = "modelreg.scan.batch_seconds"
SCAN_MAX_FILES = "modelreg.scan.max_files"
SCAN_REJECT = "modelreg.scan.reject"

# sqlite
SQLITE_BUSY_TIMEOUT_MS = "modelreg.sqlite.busy_timeout_ms"

# storage
STORAGE = "modelreg.storage"
STORAGE_LOCAL_PATH = "modelreg.storage.local.path"
STORAGE_LOCAL_DIRECT_WRITES = "modelreg.storage.local.direct_writes"

# upload
UPLOAD_CLAIM_TIMEOUT = "modelreg.upload.claim_timeout"
UPLOAD_MAX_OPEN_SESSIONS = "modelreg.upload.max_open_sessions"
UPLOAD_MAX_PUT_SIZE = "modelreg.upload.max_put_size"
UPLOAD_MIN_CHUNK_SIZE = "modelreg.upload.min_chunk_size"
UPLOAD_SESSION_TTL = "modelreg.upload.session_ttl"

# worker
WORKER_EMBEDDED = "modelreg.worker.embedded"
WORKER_LEASE = "modelreg.worker.lease"
WORKER_MAX_ATTEMPTS = "modelreg.worker.max_attempts"
WORKER_MAX_BACKOFF = "modelreg.worker.max_backoff"
WORKER_POLL_INTERVAL = "modelreg.worker.poll_interval"
WORKER_STALE_AFTER = "modelreg.worker.stale_after"

#: Settings that may come from the environment; an explicit ini setting always wins.
ENVIRONMENT_SETTINGS = {
    "MODELREG_DATABASE_URL": "sqlalchemy.url",
    "MODELREG_STORAGE": STORAGE,
    "MODELREG_STORAGE_LOCAL_PATH": STORAGE_LOCAL_PATH,
    # production.ini sets modelreg.auth.anonymous explicitly, so this cannot open it.
    "MODELREG_AUTH_ANONYMOUS": AUTH_ANONYMOUS,
}


def apply_environment(settings: dict[str, Any], environ: dict[str, str] | None = None) -> None:
    """Fill settings from ``MODELREG_*`` environment variables where the ini left them unset.

    An ini value of the form ``env:NAME`` is always taken from the environment variable
    ``NAME``; it is an error for that variable to be missing.
    """
    environ = os.environ if environ is None else environ
    for variable, key in ENVIRONMENT_SETTINGS.items():
        if not settings.get(key) and environ.get(variable):
            settings[key] = environ[variable]
    for key, value in list(settings.items()):
        if isinstance(value, str) and value.startswith("env:"):
            variable = value[4:].strip()
            if not environ.get(variable):
                raise RuntimeError(
                    f"setting {key} = {value} needs the environment variable {variable}"
                )
            settings[key] = environ[variable]
