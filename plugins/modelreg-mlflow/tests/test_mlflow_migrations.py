"""The plugin's migration builds exactly the tables ``modelreg_mlflow.tables`` declares, on
every backend, with experiment 0 (``Default``) in it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from mlflow_helpers import PLUGINS, selected_backends
from modelreg_mlflow.tables import experiments, metadata

from modelreg.testing import TestDatabase, unavailable


@pytest.mark.parametrize("backend", selected_backends())
def test_the_migration_matches_the_tables(backend: str) -> None:
    try:
        db = TestDatabase.create(backend, PLUGINS)
    except ConnectionError as exc:
        unavailable(str(exc))
    try:
        with db.engine().connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = [d for d in compare_metadata(context, metadata)
                    if "mlflow_" in repr(d)]
            rows = conn.execute(sa.select(experiments.c.id, experiments.c.name)).all()
        assert diff == [], diff
        assert [tuple(r) for r in rows] == [(0, "Default")]
    finally:
        db.drop()
