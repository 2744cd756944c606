"""The keys of the Pyramid registry (``config.registry[...]``): one place for every name.

Each part of the app keeps what it builds at start-up under one of these keys; other parts
read it from there (see docs/architecture.md, "Wiring").  Settings keys (``modelreg.*`` in
the ini file) are a different thing: they live in :mod:`modelreg.settings`.
"""

from __future__ import annotations

#: The pluggy plugin manager (:func:`modelreg.plugins.get_plugin_manager`).
PLUGIN_MANAGER = "modelreg.plugin_manager"
#: The SQLAlchemy engine; readers use it.
DB_ENGINE = "db_engine"
#: The engine that writing transactions use (``BEGIN IMMEDIATE`` on SQLite).
DB_WRITER_ENGINE = "db_writer_engine"
#: The session factory bound to :data:`DB_ENGINE`.
DB_SESSION_FACTORY = "dbsession_factory"
#: The routes whose responses stream from the database (:func:`modelreg.db.streaming_view`).
DB_STREAMING = "modelreg.db.streaming"
#: The (route name, method) pairs of views that only read, served outside pyramid_tm
#: (:func:`modelreg.db.add_read_only_view`).
DB_READ_ONLY = "modelreg.db.read_only"
#: The session factory of those views' sessions (:func:`modelreg.db.get_read_session_factory`).
DB_READ_SESSION_FACTORY = "modelreg.db.read_session_factory"
#: The active blob store (:mod:`modelreg.storage`).
BLOB_STORE = "modelreg.blob_store"
#: The security policy (:class:`modelreg.security.policy.SecurityPolicy`).
SECURITY_POLICY = "modelreg.security_policy"
#: The host names the app answers to (:mod:`modelreg.security.http`).
ALLOWED_HOSTS = "modelreg.allowed_hosts"
#: The embedded worker thread, when ``modelreg.worker.embedded``.
EMBEDDED_WORKER = "modelreg.worker"
#: The kinds of job the worker runs (:func:`modelreg.jobs.add_job_kind`).
JOB_KINDS = "modelreg.job_kinds"
#: The metrics collector, when ``modelreg.metrics.enabled``.
METRICS = "modelreg.metrics"
#: The readiness checks of ``/readyz``.
READYZ_CHECKS = "modelreg.readyz.checks"
#: The operations declared with :func:`modelreg.openapi.api_view`.
OPENAPI_OPERATIONS = "modelreg.openapi.operations"
#: The OpenAPI document, built on first request.
OPENAPI_DOCUMENT = "modelreg.openapi.document"
