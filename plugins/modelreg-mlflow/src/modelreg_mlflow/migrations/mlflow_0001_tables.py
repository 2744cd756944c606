"""MLflow experiments, runs, metrics, logged models, run artifacts and multipart uploads

Revision ID: mlflow_0001
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "mlflow_0001"
down_revision = None
branch_labels = ("modelreg_mlflow",)
depends_on = "0010"


def upgrade() -> None:
    """Create the six tables and the experiment every MLflow server has: ``0``,
    ``Default``."""
    experiments = op.create_table(
        "mlflow_experiments",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mlflow_experiments"),
        sa.UniqueConstraint("name", name="uq_mlflow_experiments_name"),
    )
    op.create_table(
        "mlflow_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("start_time", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mlflow_runs"),
    )
    op.create_index("ix_mlflow_runs_experiment_id", "mlflow_runs", ["experiment_id"])
    op.create_table(
        "mlflow_metrics",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("model_id", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mlflow_metrics"),
    )
    op.create_index("ix_mlflow_metrics_run_id", "mlflow_metrics", ["run_id"])
    op.create_table(
        "mlflow_logged_models",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("source_run_id", sa.String(32), nullable=True),
        sa.Column("model_type", sa.String(500), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mlflow_logged_models"),
    )
    op.create_index("ix_mlflow_logged_models_experiment_id", "mlflow_logged_models",
                    ["experiment_id"])
    op.create_table(
        "mlflow_artifacts",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_mlflow_artifacts"),
    )
    op.create_index("ix_mlflow_artifacts_owner", "mlflow_artifacts", ["owner"])
    op.create_table(
        "mlflow_uploads",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("num_parts", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mlflow_uploads"),
    )
    now = int(time.time() * 1000)
    op.bulk_insert(experiments, [{"id": 0, "name": "Default", "lifecycle_stage": "active",
                                  "tags": {}, "created_by": None, "created_at": now,
                                  "updated_at": now}])


def downgrade() -> None:
    """Drop the six tables."""
    for name in ("mlflow_uploads", "mlflow_artifacts", "mlflow_logged_models",
                 "mlflow_metrics", "mlflow_runs", "mlflow_experiments"):
        op.drop_table(name)
