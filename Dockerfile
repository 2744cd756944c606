# syntax=docker/dockerfile:1
# modelreg for a one-machine production trial: `pserve production.ini` on PostgreSQL, with files
# on a volume or in an S3-compatible store.  docs/deployment.md ("Containers") says how to build
# and run it; compose.yaml runs it beside PostgreSQL and MinIO.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- build: wheels into a venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The client, the server and the first-party plugins, installed the way dev.py installs them
# (without -e): the server with the PostgreSQL driver and the other WSGI servers.
COPY README.md setup.cfg pyproject.toml ./
COPY src/ src/
COPY client/ client/
COPY plugins/ plugins/
RUN python -m venv /opt/modelreg \
 && /opt/modelreg/bin/pip install ./client ".[postgresql,servers]" \
        ./plugins/modelreg-hf ./plugins/modelreg-mlflow ./plugins/modelreg-s3 \
        ./plugins/modelreg-scan ./plugins/modelreg-web ./plugins/modelreg-webhooks

# ---------------------------------------------------------------- run: no compiler, no sources
FROM ${PYTHON_IMAGE}
# MODELREG_LISTEN: egg:modelreg#waitress listens on every interface of the container instead
# of production.ini's loopback address (src/modelreg/servers.py).
ENV PATH=/opt/modelreg/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELREG_LISTEN=*:6543
# A user of its own: the registry never runs as root.
RUN groupadd --system --gid 10001 modelreg \
 && useradd --system --uid 10001 --gid modelreg --home-dir /srv/modelreg --create-home modelreg
COPY --from=build /opt/modelreg /opt/modelreg
COPY --chown=modelreg:modelreg production.ini /srv/modelreg/production.ini
COPY deploy/entrypoint.sh /usr/local/bin/modelreg-entrypoint
USER 10001:10001
WORKDIR /srv/modelreg
# Local storage (modelreg.storage.local.path = %(here)s/var/blobs) lives on the volume.
RUN mkdir -p /srv/modelreg/var
VOLUME ["/srv/modelreg/var"]
EXPOSE 6543
# /readyz: 200 once the database and the blob store answer (docs/operations.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:6543/readyz', timeout=4).status != 200)"]
# Brings the database to the newest schema, says how to make the first admin token, then
# runs the command.
ENTRYPOINT ["modelreg-entrypoint"]
CMD ["pserve", "production.ini"]
