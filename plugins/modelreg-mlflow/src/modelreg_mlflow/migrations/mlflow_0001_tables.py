"""MLflow experiments, runs, metrics, logged models, run artifacts and multipart uploads

Revision ID: mlflow_0001
"""

import time

from alembic import op

from modelreg_mlflow.tables import experiments, metadata

revision = "mlflow_0001"
down_revision = None
branch_labels = ("modelreg_mlflow",)
depends_on = "0010"


def upgrade() -> None:
    """Create the plugin's tables as ``modelreg_mlflow.tables`` declares them, and the
    experiment every MLflow server has: ``0``, ``Default``."""
    metadata.create_all(op.get_bind())
    now = int(time.time() * 1000)
    op.bulk_insert(experiments, [{"id": 0, "name": "Default", "lifecycle_stage": "active",
                                  "tags": {}, "created_by": None, "created_at": now,
                                  "updated_at": now}])


def downgrade() -> None:
    """Drop them."""
    metadata.drop_all(op.get_bind())
