"""Fleet state in the server's database: agents, assignments, installs, telemetry.

Telemetry rows are keyed by (agent_id, seq) and inserted with ON CONFLICT DO
NOTHING, so a batch the agent re-sends after a reconnect is stored exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spikefleet.v1 import fleet_pb2
from spikefleet_server.storage import Database
from spikefleet_server.storage.schema import (
    fleet_agents,
    fleet_assignments,
    fleet_installs,
    fleet_telemetry,
)
from spikefleet_server.storage.sql import insert


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class AgentRecord:
    agent_id: str
    labels: dict[str, str]
    inventory: list[dict[str, Any]]
    backend: str
    program_sha256: str
    previous_sha256: str
    version: str
    health: str
    connected: bool
    shadow_sha256: str
    first_seen_ms: int
    last_seen_ms: int


@dataclass
class AssignmentRecord:
    agent_id: str
    sha256: str
    shadow_sha256: str
    rollback: bool
    generation: int
    updated_ms: int

    def to_proto(self) -> fleet_pb2.Assignment:
        return fleet_pb2.Assignment(
            sha256=self.sha256,
            generation=self.generation,
            shadow_sha256=self.shadow_sha256,
            rollback=self.rollback,
        )


@dataclass
class InstallRecord:
    id: int
    agent_id: str
    sha256: str
    status: str  # INSTALLED, FAILED, REFUSED, ROLLED_BACK
    reason: str
    detail: str
    generation: int
    at_ms: int


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


@dataclass
class TelemetryRecord:
    agent_id: str
    seq: int
    received_ms: int
    batch: fleet_pb2.TelemetryBatch = field(repr=False)


def _device_dict(device: fleet_pb2.Device) -> dict[str, Any]:
    return {
        "kind": device.kind,
        "bus": device.bus,
        "vendor_id": device.vendor_id,
        "product_id": device.product_id,
        "description": device.description,
        "address": device.address,
    }


class FleetStore:
    """The fleet tables in the server's database."""

    def __init__(
        self,
        db: Database,
        *,
        require_program: Callable[[Connection, str], None] | None = None,
    ) -> None:
        """``require_program(conn, sha256)`` raises unless the program exists; it runs
        inside the assignment's transaction (the registry's deletes check usage in
        theirs), so a program can't be deleted between the check and the assignment."""
        self.db = db
        self._require_program = require_program

    # -- agents ----------------------------------------------------------------

    def register(self, reg: fleet_pb2.Register) -> None:
        now = _now_ms()
        with self.db.write() as conn:
            values = {
                "labels": json.dumps(dict(reg.labels), sort_keys=True),
                "inventory": json.dumps([_device_dict(d) for d in reg.inventory]),
                "backend": reg.backend,
                "program_sha256": reg.program_sha256,
                "previous_sha256": reg.previous_sha256,
                "version": reg.version,
                "health": "ok" if reg.program_sha256 else "no-program",
                "connected": True,
                "last_seen_ms": now,
            }
            statement = insert(conn, fleet_agents).values(
                agent_id=reg.agent_id, shadow_sha256="", first_seen_ms=now, **values
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[fleet_agents.c.agent_id],
                    set_={key: statement.excluded[key] for key in values},
                )
            )

    def heartbeat(self, agent_id: str, beat: fleet_pb2.Heartbeat) -> None:
        with self.db.write() as conn:
            conn.execute(
                sa.update(fleet_agents)
                .where(fleet_agents.c.agent_id == agent_id)
                .values(
                    program_sha256=beat.program_sha256,
                    health=beat.health,
                    shadow_sha256=beat.shadow_sha256,
                    last_seen_ms=_now_ms(),
                )
            )

    def set_connected(self, agent_id: str, connected: bool) -> None:
        with self.db.write() as conn:
            conn.execute(
                sa.update(fleet_agents)
                .where(fleet_agents.c.agent_id == agent_id)
                .values(connected=connected, last_seen_ms=_now_ms())
            )

    def set_program(self, agent_id: str, sha256: str) -> None:
        with self.db.write() as conn:
            self._set_program(conn, agent_id, sha256)

    @staticmethod
    def _set_program(conn: Connection, agent_id: str, sha256: str) -> None:
        agents = fleet_agents.c
        conn.execute(
            sa.update(fleet_agents)
            .where(agents.agent_id == agent_id)
            .values(
                previous_sha256=sa.case(
                    (agents.program_sha256 != sha256, agents.program_sha256),
                    else_=agents.previous_sha256,
                ),
                program_sha256=sha256,
                health="ok",
            )
        )

    def agents(self) -> list[AgentRecord]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(fleet_agents).order_by(fleet_agents.c.agent_id))
            return [self._agent(row) for row in rows]

    def agent(self, agent_id: str) -> AgentRecord | None:
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(fleet_agents).where(fleet_agents.c.agent_id == agent_id)
            ).first()
        return self._agent(row) if row else None

    @staticmethod
    def _agent(row: Any) -> AgentRecord:
        return AgentRecord(
            agent_id=row.agent_id,
            labels=json.loads(row.labels),
            inventory=json.loads(row.inventory),
            backend=row.backend,
            program_sha256=row.program_sha256,
            previous_sha256=row.previous_sha256,
            version=row.version,
            health=row.health,
            connected=bool(row.connected),
            shadow_sha256=row.shadow_sha256,
            first_seen_ms=row.first_seen_ms,
            last_seen_ms=row.last_seen_ms,
        )

    def mark_all_disconnected(self) -> None:
        """At server start nobody is connected yet, whatever the database says."""
        with self.db.write() as conn:
            conn.execute(sa.update(fleet_agents).values(connected=False))

    # -- assignments -----------------------------------------------------------

    def assign(
        self, agent_id: str, sha256: str, shadow_sha256: str = "", rollback: bool = False
    ) -> AssignmentRecord:
        now = _now_ms()
        with self.db.write() as conn:
            if self._require_program is not None:
                for program in filter(None, (sha256, shadow_sha256)):
                    self._require_program(conn, program)
            values = {
                "sha256": sha256,
                "shadow_sha256": shadow_sha256,
                "rollback": rollback,
                "updated_ms": now,
            }
            statement = insert(conn, fleet_assignments).values(
                agent_id=agent_id, generation=1, **values
            )
            statement = statement.on_conflict_do_update(
                index_elements=[fleet_assignments.c.agent_id],
                set_={"generation": fleet_assignments.c.generation + 1, **values},
            ).returning(fleet_assignments.c.generation)
            generation = int(conn.execute(statement).scalar_one())
        return AssignmentRecord(agent_id, sha256, shadow_sha256, rollback, generation, now)

    def assignment(self, agent_id: str) -> AssignmentRecord | None:
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(fleet_assignments).where(fleet_assignments.c.agent_id == agent_id)
            ).first()
        if row is None:
            return None
        return AssignmentRecord(
            row.agent_id,
            row.sha256,
            row.shadow_sha256,
            bool(row.rollback),
            row.generation,
            row.updated_ms,
        )

    def usage(self, sha256: str) -> list[str]:
        """Agents that run, keep for rollback, or are assigned ``sha256``."""
        with self.db.read() as conn:
            return self.usage_in(conn, sha256)

    @staticmethod
    def usage_in(conn: Connection, sha256: str) -> list[str]:
        """:meth:`usage` inside the caller's transaction (the registry's delete)."""
        agents, assigned = fleet_agents.c, fleet_assignments.c
        query = sa.union(
            sa.select(agents.agent_id).where(
                sa.or_(
                    agents.program_sha256 == sha256,
                    agents.previous_sha256 == sha256,
                    agents.shadow_sha256 == sha256,
                )
            ),
            sa.select(assigned.agent_id).where(
                sa.or_(assigned.sha256 == sha256, assigned.shadow_sha256 == sha256)
            ),
        ).order_by("agent_id")
        return list(conn.scalars(query))

    def settle_rollback(self, agent_id: str, generation: int, sha256: str) -> None:
        """A rollback is done: the desired program is now the one rolled back to."""
        with self.db.write() as conn:
            self._settle_rollback(conn, agent_id, generation, sha256)

    @staticmethod
    def _settle_rollback(conn: Connection, agent_id: str, generation: int, sha256: str) -> None:
        assigned = fleet_assignments.c
        conn.execute(
            sa.update(fleet_assignments)
            .where(
                assigned.agent_id == agent_id,
                assigned.generation == generation,
                assigned.rollback.is_(True),
            )
            .values(sha256=sha256, rollback=False)
        )

    # -- installs --------------------------------------------------------------

    def record_install(self, agent_id: str, report: fleet_pb2.InstallReport) -> InstallRecord:
        """Store an install report, and its effect on the agent's state first (in the same
        transaction): whoever sees the report sees the program it installed."""
        now = _now_ms()
        status = fleet_pb2.InstallReport.Status.Name(report.status)
        with self.db.write() as conn:
            if report.status in (
                fleet_pb2.InstallReport.INSTALLED,
                fleet_pb2.InstallReport.ROLLED_BACK,
            ):
                self._set_program(conn, agent_id, report.sha256)
            if report.status == fleet_pb2.InstallReport.ROLLED_BACK:
                self._settle_rollback(conn, agent_id, report.generation, report.sha256)
            row_id = conn.execute(
                sa.insert(fleet_installs)
                .values(
                    agent_id=agent_id,
                    sha256=report.sha256,
                    status=status,
                    reason=report.reason,
                    detail=report.detail,
                    generation=report.generation,
                    at_ms=now,
                )
                .returning(fleet_installs.c.id)
            ).scalar_one()
        return InstallRecord(
            int(row_id),
            agent_id,
            report.sha256,
            status,
            report.reason,
            report.detail,
            report.generation,
            now,
        )

    def installs(self, agent_id: str | None = None, after_id: int = 0) -> list[InstallRecord]:
        query = (
            sa.select(fleet_installs)
            .where(fleet_installs.c.id > after_id)
            .order_by(fleet_installs.c.id)
        )
        if agent_id is not None:
            query = query.where(fleet_installs.c.agent_id == agent_id)
        with self.db.read() as conn:
            return [
                InstallRecord(
                    r.id, r.agent_id, r.sha256, r.status, r.reason, r.detail, r.generation, r.at_ms
                )
                for r in conn.execute(query)
            ]

    # -- telemetry -------------------------------------------------------------

    def ingest(self, agent_id: str, batch: fleet_pb2.TelemetryBatch) -> bool:
        """Store one batch; False if this (agent, seq) was already stored or was refused."""
        return self.ingest_many([(agent_id, batch)])[0].new

    def ingest_many(
        self, items: list[tuple[str, fleet_pb2.TelemetryBatch]], seen: Sequence[str] = ()
    ) -> list[IngestResult]:
        """Store batches, and refresh the last_seen of the ``seen`` agents, in one
        transaction (one fsync); per batch, whether it was new or why it was refused.

        The group goes in as one multi-row insert; only if the database refuses a row
        of it is each batch inserted alone, under its own savepoint, so one bad batch
        is refused and the others of the group are still stored."""
        now = _now_ms()
        with self.db.write() as conn:
            if seen:
                conn.execute(
                    sa.update(fleet_agents)
                    .where(fleet_agents.c.agent_id == sa.bindparam("agent"))
                    .values(last_seen_ms=now),
                    [{"agent": agent_id} for agent_id in seen],
                )
            if not items:
                return []
            rows = [_telemetry_row(agent_id, batch, now) for agent_id, batch in items]
            try:
                with conn.begin_nested():
                    inserted = _insert_telemetry(conn, rows)
            except _ROW_ERRORS:
                return [_insert_alone(conn, row) for row in rows]
        stored = []
        for agent_id, batch in items:  # a batch sent twice in one group is new only once
            key = (agent_id, batch.seq)
            stored.append(IngestResult(key in inserted))
            inserted.discard(key)
        return stored

    def prune_telemetry(self, older_than_ms: int, max_per_agent: int) -> int:
        """Delete batches received before ``older_than_ms`` (0: none) and all but the
        newest ``max_per_agent`` of each agent (0: no cap); return how many went."""
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

    def delete_agent(self, agent_id: str) -> tuple[int, int] | None:
        """Forget an agent (record, assignment, installs, telemetry) in one transaction;
        (telemetry rows, install rows) deleted, or None if it was unknown."""
        with self.db.write() as conn:
            counts = [
                conn.execute(sa.delete(table).where(table.c.agent_id == agent_id)).rowcount
                for table in (fleet_agents, fleet_assignments, fleet_installs, fleet_telemetry)
            ]
        if not any(counts):
            return None
        return counts[3], counts[2]

    def last_telemetry_seq(self, agent_id: str) -> int:
        with self.db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.max(fleet_telemetry.c.seq)).where(
                    fleet_telemetry.c.agent_id == agent_id
                )
            ).scalar()
        return int(value or 0)

    def telemetry(
        self, agent_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[TelemetryRecord]:
        t = fleet_telemetry.c
        query = (
            sa.select(t.agent_id, t.seq, t.received_ms, t.body)
            .where(t.agent_id == agent_id, t.seq > after_seq)
            .order_by(t.seq)
            .limit(limit)
        )
        with self.db.read() as conn:
            return [_telemetry_record(r) for r in conn.execute(query)]

    def telemetry_since(
        self, since_ms: int, agent_ids: list[str] | None = None
    ) -> list[TelemetryRecord]:
        """Batches received at or after ``since_ms`` (for health gates), oldest first."""
        t = fleet_telemetry.c
        query = (
            sa.select(t.agent_id, t.seq, t.received_ms, t.body)
            .where(t.received_ms >= since_ms)
            .order_by(t.received_ms, t.agent_id, t.seq)
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        wanted = set(agent_ids) if agent_ids is not None else None
        return [_telemetry_record(r) for r in rows if wanted is None or r.agent_id in wanted]


def _insert_telemetry(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """Insert rows not stored yet; the (agent_id, seq) of those inserted."""
    statement = (
        insert(conn, fleet_telemetry)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[fleet_telemetry.c.agent_id, fleet_telemetry.c.seq])
        .returning(fleet_telemetry.c.agent_id, fleet_telemetry.c.seq)
    )
    return {(r.agent_id, r.seq) for r in conn.execute(statement)}


def _insert_alone(conn: Connection, row: dict[str, Any]) -> IngestResult:
    try:
        with conn.begin_nested():
            return IngestResult(bool(_insert_telemetry(conn, [row])))
    except _ROW_ERRORS as exc:
        return IngestResult(False, f"not storable: {getattr(exc, 'orig', None) or exc}")


def _telemetry_row(agent_id: str, batch: fleet_pb2.TelemetryBatch, now: int) -> dict[str, Any]:
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


def _telemetry_record(row: Any) -> TelemetryRecord:
    return TelemetryRecord(
        row.agent_id, row.seq, row.received_ms, fleet_pb2.TelemetryBatch.FromString(row.body)
    )
