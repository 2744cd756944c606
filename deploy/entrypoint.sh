#!/bin/sh
# The container's entry point (see Dockerfile): migrate, help with the first token, then serve.
set -eu

# The settings file, relative to the working directory (/srv/modelreg in the image).
ini="${MODELREG_INI:-production.ini}"

# Idempotent: the first start creates the schema, later ones apply new migrations.
modelreg db upgrade "$ini"

if [ -z "$(modelreg users list "$ini")" ]; then
    cat >&2 <<'HELP'
modelreg: no principal exists yet. Make the first admin and its token with
    docker compose exec modelreg modelreg users add admin production.ini --admin
    docker compose exec modelreg modelreg tokens create admin production.ini --scope admin
(or `docker exec <container> ...` without compose); the token is printed once.
HELP
fi

exec "$@"
