"""MLflow experiments, runs, metrics, logged models, run artifacts and multipart uploads

Revision ID: mlflow_0001
"""

from alembic import op

from modelreg_mlflow.tables import metadata

revision = "mlflow_0001"
down_revision = None
branch_labels = ("modelreg_mlflow",)
depends_on = "0010"


def upgrade() -> None:
    """Create the plugin's tables as ``modelreg_mlflow.tables`` declares them."""
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    """Drop them."""
    metadata.drop_all(op.get_bind())
