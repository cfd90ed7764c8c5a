"""The server's storage layer: one database (SQLite or PostgreSQL) through SQLAlchemy Core.

:mod:`.database` opens it (the dialect's quirks in one place), :mod:`.schema` declares
every area's tables, :mod:`.migrations` brings a database's schema to the one this
server knows (Alembic). The areas' stores (registry, fleet, rollouts, telemetry) are
written once against these tables and run on both dialects.
"""

from spikefleet_server.storage.database import Database, database_url
from spikefleet_server.storage.migrations import (
    SchemaError,
    check_schema,
    current_revision,
    head_revision,
    open_database,
    upgrade,
)

__all__ = [
    "Database",
    "SchemaError",
    "check_schema",
    "current_revision",
    "database_url",
    "head_revision",
    "open_database",
    "upgrade",
]
