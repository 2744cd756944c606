"""gunicorn settings for modelreg: ``gunicorn -c gunicorn.conf.py --paste production.ini``.

The app and logging come from production.ini (``--paste``); its ``[server:main]`` section is
Waitress's and gunicorn ignores it.  Copy this file next to production.ini and adjust.
See docs/deployment.md for sizing.
"""

import os
import shutil
from pathlib import Path

bind = "127.0.0.1:6543"
# Processes x threads: each thread serves one request at a time.  Keep
# sqlalchemy.pool_size + sqlalchemy.max_overflow >= threads (per process).
worker_class = "gthread"
workers = 2
threads = 8
# Every worker assembles the app itself (and runs the plugins' modelreg_startup checks):
# preloading it in the master is not supported (docs/plugins.md, modelreg_startup).
preload_app = False
# The app reads its thread count from here for its pool-size check.
raw_env = [f"MODELREG_SERVER_THREADS={threads}"]

# Uploads and downloads of large files take long: a worker thread streaming one must not be
# killed as stuck.  gthread workers heartbeat from their main thread, so this bounds a hung
# worker, not a slow request.
timeout = 120
graceful_timeout = 30
keepalive = 5
# Request line and header limits (Waitress's max_request_header_size in production.ini).
limit_request_line = 8190
limit_request_field_size = 16384

# Behind a TLS reverse proxy on the same machine: trust its X-Forwarded-* headers.
forwarded_allow_ips = "127.0.0.1"

# Prometheus metrics summed over the workers (modelreg.metrics.enabled = true): every worker
# writes its counts to this directory, which must be empty when gunicorn starts.
prometheus_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def on_starting(server):
    """Empty the metrics directory before the first worker starts."""
    if prometheus_dir:
        path = Path(prometheus_dir)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)


def child_exit(server, worker):
    """Tell prometheus_client a worker is gone, so that its gauges stop counting."""
    if prometheus_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
