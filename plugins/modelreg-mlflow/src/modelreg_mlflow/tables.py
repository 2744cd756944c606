"""The plugin's tables, on its own metadata (never the core's): MLflow's experiments, runs,
metrics, logged models, run artifacts (by digest, held from gc) and proxied multipart
uploads."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

experiments = sa.Table(
    "mlflow_experiments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(500), nullable=False, unique=True),
    sa.Column("lifecycle_stage", sa.String(16), nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # ms since the epoch, as MLflow
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

runs = sa.Table(
    "mlflow_runs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("experiment_id", sa.Integer, nullable=False, index=True),
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
)

metrics = sa.Table(
    "mlflow_metrics", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("model_id", sa.String(40), nullable=True),
)

logged_models = sa.Table(
    "mlflow_logged_models", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("experiment_id", sa.Integer, nullable=False, index=True),
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
)

#: Files under the artifact root: ``<experiment>/<run>/artifacts/…`` and
#: ``<experiment>/models/<model>/artifacts/…``, each a blob held under a key of its path
#: (``key``, the hex sha256 of ``path``: paths are longer than MariaDB indexes).
artifacts = sa.Table(
    "mlflow_artifacts", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(64), nullable=False, index=True),  # run or logged model id
)

#: Proxied multipart uploads (``mpu``): parts are blobs held under ``<upload>/<part>``.
uploads = sa.Table(
    "mlflow_uploads", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("num_parts", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
