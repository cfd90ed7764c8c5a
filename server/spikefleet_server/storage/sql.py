"""Statements whose SQL differs by dialect, written once for the stores."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def insert(conn: Connection, table: sa.Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` clauses (``on_conflict_do_update``/``_do_nothing``,
    ``.excluded``) for the connection's dialect; both take the same arguments."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every timestamp column."""
    return int(time.time() * 1000)
