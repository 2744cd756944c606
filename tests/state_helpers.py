"""The registry's state as data, to show that a refused request changed nothing."""

from __future__ import annotations

import sqlalchemy as sa

#: Tables and columns whose changes are not state changes of the registry: failed
#: authentications are recorded (for throttling), and a token's use is stamped.
IGNORED_TABLES = frozenset({"alembic_version", "auth_failures"})
IGNORED_COLUMNS = frozenset({("api_tokens", "last_used_at")})


def reflect(engine: sa.Engine) -> sa.MetaData:
    """The tables of the database (reflect once, then pass to :func:`database_state`)."""
    metadata = sa.MetaData()
    metadata.reflect(bind=engine)
    return metadata


def database_state(engine: sa.Engine, metadata: sa.MetaData | None = None) -> dict[str, list]:
    """Every row of every table (but :data:`IGNORED_TABLES` and :data:`IGNORED_COLUMNS`),
    sorted, so that two states compare equal exactly when nothing changed."""
    metadata = metadata if metadata is not None else reflect(engine)
    state = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in IGNORED_TABLES:
                continue
            columns = [c for c in table.c if (table.name, c.name) not in IGNORED_COLUMNS]
            rows = conn.execute(sa.select(*columns)).all()
            state[table.name] = sorted(repr(tuple(row)) for row in rows)
    return state
