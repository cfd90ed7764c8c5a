"""Program bytes in the database, for replicas that share no disk.

On PostgreSQL the registry keeps each signed program here, keyed by its sha256
(content-addressed); on SQLite (one server) they stay files in the data dir and
this table stays empty.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "program_blobs",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("program_blobs")
