"""Which replica holds each agent's control stream.

``fleet_agents.replica_id`` is the id of the replica that recorded the agent as
connected (0: a lone server, or none). When a replica dies, another one finds its
liveness lock free and marks the agents it held disconnected (see
``spikefleet_server.replicas.Liveness``), and a replica's "disconnected" write
changes only rows it still owns (the agent may already be on another replica).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fleet_agents") as batch:
        batch.add_column(sa.Column("replica_id", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("fleet_agents") as batch:
        batch.drop_column("replica_id")
