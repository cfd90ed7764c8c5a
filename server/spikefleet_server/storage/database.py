"""One SQLAlchemy engine for the whole server, SQLite or PostgreSQL.

Why SQLAlchemy 2 Core (not the ORM, not raw drivers): the stores are a few dozen
hand-shaped statements (upserts, ``RETURNING``, ``FOR UPDATE``) that must run on
both SQLite and PostgreSQL; Core writes each once as an expression and renders the
dialect's SQL, pools connections, and is what Alembic migrates. The ORM's unit of
work would add identity maps and lazy loads the stores do not need.

The dialects' differences live here and nowhere else:

- SQLite: WAL, ``busy_timeout``, foreign keys on, ``synchronous=FULL``; Python's
  sqlite3 module starts transactions on its own, so it is put in autocommit mode and
  every transaction begins explicitly: ``BEGIN IMMEDIATE`` for :meth:`Database.write`
  (writers queue for the write lock up front instead of failing half-way when a read
  transaction tries to upgrade), a deferred ``BEGIN`` for :meth:`Database.read`. The
  process's own writers queue on a lock first, so only other processes ever meet
  SQLite's busy handler.
- PostgreSQL (psycopg 3): a connection pool; writers that must exclude each other
  lock rows (``FOR UPDATE``) where SQLite's one write lock already does it.

The stores' methods block; :meth:`Database.run` runs one on the storage threads, so
async callers (the gRPC servicers on the event loop) never wait on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

P = ParamSpec("P")
T = TypeVar("T")

_WRITE = "spikefleet_write"
STORAGE_THREADS = 4
PING_AFTER_IDLE_S = 5.0  # PostgreSQL: a pooled connection idle this long is checked first
_IDLE_SINCE = "spikefleet_idle_since"


def database_url(target: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL for ``target``: a URL is kept, a path becomes ``sqlite:///path``."""
    text = os.fspath(target)
    if "://" in text:
        return text.replace("postgresql://", "postgresql+psycopg://", 1).replace(
            "postgres://", "postgresql+psycopg://", 1
        )
    return f"sqlite:///{Path(text).resolve()}"


class Database:
    """The server's database: ``target`` is a SQLite file path or a SQLAlchemy URL
    (``sqlite:///...``, ``postgresql://user@host/db``)."""

    def __init__(self, target: str | os.PathLike[str], *, threads: int = STORAGE_THREADS) -> None:
        self.url = sa.make_url(database_url(target))
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            path = Path(self.url.database or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 10},
                pool_size=threads + 2,  # one per storage thread, and the loop's own few
                max_overflow=4,
            )
            _sqlite_events(self.engine)
        elif self.dialect == "postgresql":
            # no pool_pre_ping: it costs every transaction two more round trips (BEGIN,
            # SELECT 1); a connection is pinged only after it sat idle (see below)
            self.engine = sa.create_engine(self.url, pool_size=threads + 2, max_overflow=4)
            _postgresql_events(self.engine)
        else:
            raise ValueError(
                f"unsupported database {self.url.render_as_string(hide_password=True)}: "
                "use sqlite:///PATH or postgresql://USER@HOST/DB"
            )
        # SQLite has one writer: this process's writers queue here, in order, instead of
        # in SQLite's busy handler (which sleeps up to 100 ms between tries)
        self._writer: contextlib.AbstractContextManager[object] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="storage")

    @property
    def path(self) -> Path | None:
        """The SQLite file (None on PostgreSQL)."""
        return Path(self.url.database or "") if self.dialect == "sqlite" else None

    def describe(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot; never takes SQLite's write lock)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._writer, self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store method on the storage threads (with the caller's context
        variables, so its logs keep the request id)."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: context.run(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we say BEGIN ourselves (see begin)
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=10000",
            "foreign_keys=ON",
            "synchronous=FULL",
        ):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _postgresql_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    @event.listens_for(engine, "checkin")
    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """A connection that sat in the pool a while may have been closed by the server
        (restarted, idle timeout, a dropped route): check it first, and let the pool
        replace it if it is dead. One in use moments ago is used as it is (a dead one
        then fails its statement, and the pool replaces all connections older than it)."""
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc
