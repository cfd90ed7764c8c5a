"""The telemetry area: agents' batches in the server's database, stored exactly once.

Rows are keyed by (agent_id, seq) and inserted with ON CONFLICT DO NOTHING, so a
batch the agent re-sends after a reconnect is stored once. A group of batches
(the fleet's group commit) is one multi-row insert in one transaction; a row the
database refuses is refused alone (savepoints) and the rest of the group stored.
Retention (age, rows per agent) is :meth:`TelemetryStore.prune`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spikefleet.v1 import fleet_pb2
from spikefleet_server.replicas import FLEET, fleet_payloads, notify
from spikefleet_server.storage import Database
from spikefleet_server.storage.schema import fleet_agents, fleet_telemetry
from spikefleet_server.storage.sql import dialect_insert, now_ms


@dataclass(frozen=True)
class IngestResult:
    """One batch of a group commit: stored for the first time, already there, or refused."""

    new: bool
    refused: str = ""  # why the database could not store it ("" = stored or duplicate)


# Errors a single row can cause (a value the database cannot hold); anything else
# (disk full, I/O) fails the whole transaction and the writer retries the group.
_ROW_ERRORS = (
    sa.exc.IntegrityError,
    sa.exc.DataError,
    sa.exc.InterfaceError,
    sa.exc.ProgrammingError,
    OverflowError,
    ValueError,
)


@dataclass(frozen=True)
class TelemetryTotals:
    """Sums over some agents' batches in a window (what rollout gates judge)."""

    frames: int = 0
    errors: int = 0
    p99_ms: float = 0.0  # the worst batch p99 in the window
    shadow_frames: int = 0
    shadow_agreements: int = 0
    batches: int = 0


IN_CHUNK = 5_000
"""Agent ids per ``IN (...)`` list: well below SQLite's 32,766 and PostgreSQL's 65,535
bound parameters."""


@dataclass
class TelemetryRecord:
    agent_id: str
    seq: int
    received_ms: int
    batch: fleet_pb2.TelemetryBatch = field(repr=False)


class TelemetryStore:
    """The ``fleet_telemetry`` table; every method runs on the storage threads."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def ingest(self, agent_id: str, batch: fleet_pb2.TelemetryBatch) -> bool:
        """Store one batch; False if this (agent, seq) was already stored or was refused."""
        return (await self.ingest_many([(agent_id, batch)]))[0].new

    async def ingest_many(
        self, items: list[tuple[str, fleet_pb2.TelemetryBatch]], seen: Sequence[str] = ()
    ) -> list[IngestResult]:
        """Store batches, and refresh the last_seen of the ``seen`` agents, in one
        transaction (one fsync); per batch, whether it was new or why it was refused.

        The group goes in as one multi-row insert; only if the database refuses a row
        of it is each batch inserted alone, under its own savepoint, so one bad batch
        is refused and the others of the group are still stored."""
        return await self.db.run(self._ingest_many, items, seen)

    def _ingest_many(
        self, items: list[tuple[str, fleet_pb2.TelemetryBatch]], seen: Sequence[str]
    ) -> list[IngestResult]:
        now = now_ms()
        rows = [_row(agent_id, batch, now) for agent_id, batch in items]
        # a canary's shadow frames may be what the rollout leader (maybe another
        # replica) waits for; other batches only matter when a bake ends
        shadowed = sorted({a for a, b in items if b.shadow_frames > 0})
        try:
            with self.db.write() as conn:
                _seen(conn, seen, now)
                _announce(conn, shadowed)
                inserted = _insert(conn, rows) if rows else set()
        except _ROW_ERRORS:
            # the database refused a row and the transaction rolled back: again, each
            # batch under its own savepoint (a savepoint per group costs two round trips
            # on PostgreSQL, for a case that only garbage causes)
            with self.db.write() as conn:
                _seen(conn, seen, now)
                _announce(conn, shadowed)
                return [_insert_alone(conn, row) for row in rows]
        stored = []
        for agent_id, batch in items:  # a batch sent twice in one group is new only once
            key = (agent_id, batch.seq)
            stored.append(IngestResult(key in inserted))
            inserted.discard(key)
        return stored

    async def prune(self, older_than_ms: int, max_per_agent: int) -> int:
        """Delete batches received before ``older_than_ms`` (0: none) and all but the
        newest ``max_per_agent`` of each agent (0: no cap); return how many went."""
        return await self.db.run(self._prune, older_than_ms, max_per_agent)

    def _prune(self, older_than_ms: int, max_per_agent: int) -> int:
        t = fleet_telemetry.c
        deleted = 0
        with self.db.write() as conn:
            if older_than_ms:
                deleted += conn.execute(
                    sa.delete(fleet_telemetry).where(t.received_ms < older_than_ms)
                ).rowcount
            if max_per_agent:
                over = conn.scalars(
                    sa.select(t.agent_id)
                    .group_by(t.agent_id)
                    .having(sa.func.count() > max_per_agent)
                ).all()
                for agent_id in over:
                    newest_dropped = (
                        sa.select(t.seq)
                        .where(t.agent_id == agent_id)
                        .order_by(t.seq.desc())
                        .limit(1)
                        .offset(max_per_agent)
                        .scalar_subquery()
                    )
                    deleted += conn.execute(
                        sa.delete(fleet_telemetry).where(
                            t.agent_id == agent_id, t.seq <= newest_dropped
                        )
                    ).rowcount
        return deleted

    async def last_seq(self, agent_id: str) -> int:
        """The highest seq stored for the agent (0: none)."""
        return await self.db.run(self._last_seq, agent_id)

    def _last_seq(self, agent_id: str) -> int:
        with self.db.read() as conn:
            return last_seq_in(conn, agent_id)

    async def of_agent(
        self, agent_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[TelemetryRecord]:
        """The agent's batches after ``after_seq``, by seq."""
        t = fleet_telemetry.c
        query = (
            sa.select(t.agent_id, t.seq, t.received_ms, t.body)
            .where(t.agent_id == agent_id, t.seq > after_seq)
            .order_by(t.seq)
            .limit(limit)
        )
        return await self.db.run(self._records, query)

    async def ended_within(
        self,
        since_ms: int,
        until_ms: int,
        *,
        agent_ids: Sequence[str] = (),
        program_sha256s: Sequence[str] = (),
        after: tuple[str, int] | None = None,
        limit: int = 2_000,
    ) -> list[TelemetryRecord]:
        """Batches of known agents whose period ended in [since_ms, until_ms], only of
        ``agent_ids`` and only run by ``program_sha256s`` when given, by (agent_id, seq)
        and after ``after``, one page: the range and the filters are the stored columns',
        so only the batches selected are read."""
        t = fleet_telemetry.c
        query = sa.select(t.agent_id, t.seq, t.received_ms, t.body).where(
            t.end_ms >= since_ms,
            t.end_ms <= until_ms,
            t.agent_id.in_(sa.select(fleet_agents.c.agent_id)),
        )
        if agent_ids:
            query = query.where(t.agent_id.in_(list(agent_ids)))
        if program_sha256s:
            query = query.where(t.program_sha256.in_(list(program_sha256s)))
        if after is not None:
            query = query.where(sa.tuple_(t.agent_id, t.seq) > sa.tuple_(*after))
        return await self.db.run(self._records, query.order_by(t.agent_id, t.seq).limit(limit))

    async def since(
        self, since_ms: int, agent_ids: Sequence[str] | None = None
    ) -> list[TelemetryRecord]:
        """Batches received at or after ``since_ms`` (for health gates), oldest first."""
        t = fleet_telemetry.c
        query = (
            sa.select(t.agent_id, t.seq, t.received_ms, t.body)
            .where(t.received_ms >= since_ms)
            .order_by(t.received_ms, t.agent_id, t.seq)
        )
        records = await self.db.run(self._records, query)
        if agent_ids is None:
            return records
        wanted = set(agent_ids)
        return [r for r in records if r.agent_id in wanted]

    async def totals(
        self,
        agent_ids: Sequence[str],
        since_ms: int,
        *,
        program_sha256: str = "",
        shadow_sha256: str = "",
    ) -> TelemetryTotals:
        """Sums of the agents' batches received at or after ``since_ms``: only those
        reported running ``program_sha256`` when it is given, and shadow frames only of
        ``shadow_sha256`` when that is. One aggregate query (per 5,000 agents) over the
        stored columns; no batch is read into Python."""
        return await self.db.run(
            self._totals, sorted(set(agent_ids)), since_ms, program_sha256, shadow_sha256
        )

    def _totals(
        self, agent_ids: list[str], since_ms: int, program_sha256: str, shadow_sha256: str
    ) -> TelemetryTotals:
        t = fleet_telemetry.c
        shadow_frames: sa.ColumnElement[Any]
        agreements: sa.ColumnElement[Any]
        if shadow_sha256:
            of_shadow = t.shadow_sha256 == shadow_sha256
            shadow_frames = sa.case((of_shadow, t.shadow_frames), else_=0)
            agreements = sa.case((of_shadow, t.shadow_agreements), else_=0)
        else:
            shadow_frames, agreements = t.shadow_frames, t.shadow_agreements
        total = sa.func.coalesce
        columns = (
            sa.func.count(),
            total(sa.func.sum(t.frames), 0),
            total(sa.func.sum(t.errors), 0),
            total(sa.func.max(t.latency_p99_ms), 0.0),
            total(sa.func.sum(shadow_frames), 0),
            total(sa.func.sum(agreements), 0),
        )
        batches = frames = errors = shadow = agreed = 0
        p99 = 0.0
        with self.db.read() as conn:
            for start in range(0, len(agent_ids), IN_CHUNK):
                query = sa.select(*columns).where(
                    t.received_ms >= since_ms, t.agent_id.in_(agent_ids[start : start + IN_CHUNK])
                )
                if program_sha256:
                    query = query.where(t.program_sha256 == program_sha256)
                row = conn.execute(query).one()
                batches += int(row[0])
                frames += int(row[1])
                errors += int(row[2])
                p99 = max(p99, float(row[3]))
                shadow += int(row[4])
                agreed += int(row[5])
        return TelemetryTotals(frames, errors, p99, shadow, agreed, batches)

    def _records(self, query: Any) -> list[TelemetryRecord]:
        with self.db.read() as conn:
            return [
                TelemetryRecord(
                    r.agent_id, r.seq, r.received_ms, fleet_pb2.TelemetryBatch.FromString(r.body)
                )
                for r in conn.execute(query)
            ]


_LAST_SEQ = sa.select(sa.func.max(fleet_telemetry.c.seq)).where(
    fleet_telemetry.c.agent_id == sa.bindparam("agent_id")
)


def last_seq_in(conn: Connection, agent_id: str) -> int:
    """:meth:`TelemetryStore.last_seq` inside the caller's transaction (the fleet's
    Register reads it in its own)."""
    return int(conn.execute(_LAST_SEQ, {"agent_id": agent_id}).scalar() or 0)


# one statement for the group's agents (executemany ran one UPDATE per agent)
_SEEN = (
    sa.update(fleet_agents)
    .where(fleet_agents.c.agent_id.in_(sa.bindparam("agents", expanding=True)))
    .values(last_seen_ms=sa.bindparam("now"))
)


def _seen(conn: Connection, agent_ids: Sequence[str], now: int) -> None:
    """Refresh the last_seen of these agents (the fleet's periodic "still here")."""
    for start in range(0, len(agent_ids), IN_CHUNK):
        conn.execute(_SEEN, {"agents": list(agent_ids[start : start + IN_CHUNK]), "now": now})


def _announce(conn: Connection, agent_ids: Sequence[str]) -> None:
    for payload in fleet_payloads("telemetry", agent_ids):
        notify(conn, FLEET, payload)


@functools.cache
def _insert_statement(dialect: str) -> Any:
    # One statement, built once and executed for many rows: SQLAlchemy batches it into
    # multi-row INSERTs ("insertmanyvalues"); a literal multi-row VALUES would be compiled
    # anew for every group (about 1 ms per row).
    return (
        dialect_insert(dialect, fleet_telemetry)
        .on_conflict_do_nothing(index_elements=[fleet_telemetry.c.agent_id, fleet_telemetry.c.seq])
        .returning(fleet_telemetry.c.agent_id, fleet_telemetry.c.seq)
    )


_COLUMNS = tuple(column.name for column in fleet_telemetry.columns)
_PG_TYPES = {sa.Text: "text", sa.BigInteger: "int8", sa.Float: "float8", sa.LargeBinary: "bytea"}
# PostgreSQL: the group as one array per column, unnested into rows by the server: one
# statement of 14 parameters however many rows (SQLAlchemy's executemany binds and
# renders every row's 14 values: 3-4 times the client CPU per row)
_UNNEST_INSERT = (
    f"INSERT INTO fleet_telemetry ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%s::{_PG_TYPES[type(column.type)]}[]" for column in fleet_telemetry.columns)
    + ") ON CONFLICT (agent_id, seq) DO NOTHING RETURNING agent_id, seq"
)


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """Insert rows not stored yet; the (agent_id, seq) of those inserted."""
    if conn.dialect.name == "postgresql":
        arrays = tuple([row[name] for row in rows] for name in _COLUMNS)
        return {(agent_id, seq) for agent_id, seq in conn.exec_driver_sql(_UNNEST_INSERT, arrays)}
    statement = _insert_statement(conn.dialect.name)
    return {(r.agent_id, r.seq) for r in conn.execute(statement, rows)}


def _insert_alone(conn: Connection, row: dict[str, Any]) -> IngestResult:
    try:
        with conn.begin_nested():
            return IngestResult(bool(_insert(conn, [row])))
    except _ROW_ERRORS as exc:
        return IngestResult(False, f"not storable: {getattr(exc, 'orig', None) or exc}")


def _row(agent_id: str, batch: fleet_pb2.TelemetryBatch, now: int) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "seq": batch.seq,
        "received_ms": now,
        "start_ms": batch.start_unix_ms,
        "end_ms": batch.end_unix_ms,
        "program_sha256": batch.program_sha256,
        "frames": batch.frames,
        "predictions": batch.predictions,
        "errors": batch.errors,
        "latency_p99_ms": batch.latency_p99_ms,
        "shadow_sha256": batch.shadow_sha256,
        "shadow_frames": batch.shadow_frames,
        "shadow_agreements": batch.shadow_agreements,
        "body": batch.SerializeToString(),
    }
