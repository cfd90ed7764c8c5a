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
    return dialect_insert(conn.dialect.name, table)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """:func:`insert` by dialect name, for statements built once and kept (a hot path's
    statement built per call costs more than its execution: ``.excluded`` alone
    copies every column of the table)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every timestamp column."""
    return int(time.time() * 1000)
