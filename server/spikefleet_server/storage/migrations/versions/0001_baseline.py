"""The schema of spikefleet-server 0.1.0, and adoption of a database it made.

0.1.0 created its tables with ``CREATE TABLE IF NOT EXISTS`` and had no version
table. On such a database this revision creates only what is missing (tables, and
the columns 0.1.0 added later with defaults), keeps every row, and records the
revision; on an empty database it creates everything.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# A frozen copy of the tables at this revision (later revisions change them with op.*).
_meta = sa.MetaData()
_ROWID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

sa.Table(
    "programs",
    _meta,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("fidelity", sa.Text, nullable=False),
    sa.Column("created_unix_ms", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("source_sha256", sa.Text, nullable=False),
    sa.UniqueConstraint("name", "version"),
)
sa.Table(
    "program_versions",
    _meta,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("last_version", sa.Integer, nullable=False),
)
sa.Table(
    "fleet_agents",
    _meta,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("inventory", sa.Text, nullable=False),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("program_sha256", sa.Text, nullable=False),
    sa.Column("previous_sha256", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("health", sa.Text, nullable=False),
    sa.Column("connected", sa.Boolean, nullable=False),
    sa.Column("shadow_sha256", sa.Text, nullable=False, server_default=""),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
)
sa.Table(
    "fleet_assignments",
    _meta,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("shadow_sha256", sa.Text, nullable=False),
    sa.Column("rollback", sa.Boolean, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)
sa.Table(
    "fleet_installs",
    _meta,
    sa.Column("id", _ROWID, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Index("fleet_installs_agent", "agent_id", "id"),
    sqlite_autoincrement=True,
)
sa.Table(
    "fleet_telemetry",
    _meta,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sa.Column("start_ms", sa.BigInteger, nullable=False),
    sa.Column("end_ms", sa.BigInteger, nullable=False),
    sa.Column("program_sha256", sa.Text, nullable=False),
    sa.Column("frames", sa.BigInteger, nullable=False),
    sa.Column("predictions", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("latency_p99_ms", sa.Float, nullable=False),
    sa.Column("shadow_sha256", sa.Text, nullable=False),
    sa.Column("shadow_frames", sa.BigInteger, nullable=False),
    sa.Column("shadow_agreements", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("fleet_telemetry_received", "received_ms"),
)
sa.Table(
    "rollouts",
    _meta,
    sa.Column("rollout_id", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("phase", sa.Integer, nullable=False),
    sa.Column("phases", sa.Integer, nullable=False),
    sa.Column("canary", sa.Boolean, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("stage_started_ms", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("gates", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Index("rollouts_state", "state"),
)
sa.Table(
    "rollout_agents",
    _meta,
    sa.Column("rollout_id", sa.Text, sa.ForeignKey("rollouts.rollout_id"), primary_key=True),
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("phase", sa.Integer, nullable=False),
    sa.Column("from_sha256", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("status_ms", sa.BigInteger, nullable=False, server_default="0"),
)
sa.Table(
    "rollout_events",
    _meta,
    sa.Column("rollout_id", sa.Text, sa.ForeignKey("rollouts.rollout_id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("unix_ms", sa.BigInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    _meta.create_all(bind, checkfirst=True)
    for table in _meta.sorted_tables:
        if table.name not in existing:
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:  # added by 0.1.0 after the table was first made
                assert column.server_default is not None, f"{table.name}.{column.name}"
                op.add_column(table.name, column.copy())
        indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    for table in reversed(_meta.sorted_tables):
        op.drop_table(table.name)
