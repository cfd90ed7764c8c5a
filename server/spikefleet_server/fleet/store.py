"""Fleet state in the server's SQLite file: agents, assignments, installs, telemetry.

Telemetry rows are keyed by (agent_id, seq) and inserted with OR IGNORE, so a
batch the agent re-sends after a reconnect is stored exactly once. Each batch of a
group commit is inserted under its own savepoint: one the database refuses is
reported as refused, and the others of the group are still stored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spikefleet.v1 import fleet_pb2
from spikefleet_server.db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_agents (
    agent_id TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    inventory TEXT NOT NULL,
    backend TEXT NOT NULL,
    program_sha256 TEXT NOT NULL,
    previous_sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    health TEXT NOT NULL,
    connected INTEGER NOT NULL,
    shadow_sha256 TEXT NOT NULL DEFAULT '',
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_assignments (
    agent_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    shadow_sha256 TEXT NOT NULL,
    rollback INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_installs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    generation INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_installs_agent ON fleet_installs (agent_id, id);
CREATE TABLE IF NOT EXISTS fleet_telemetry (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    program_sha256 TEXT NOT NULL,
    frames INTEGER NOT NULL,
    predictions INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    latency_p99_ms REAL NOT NULL,
    shadow_sha256 TEXT NOT NULL,
    shadow_frames INTEGER NOT NULL,
    shadow_agreements INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS fleet_telemetry_received ON fleet_telemetry (received_ms);
"""


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
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError, ValueError)


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
    """The fleet tables in the server's shared Database (per-thread connections)."""

    def __init__(
        self,
        db: Database,
        *,
        require_program: Callable[[sqlite3.Connection, str], None] | None = None,
    ) -> None:
        """``require_program(conn, sha256)`` raises unless the program exists; it runs
        inside the assignment's transaction (the registry's deletes check usage in
        theirs), so a program can't be deleted between the check and the assignment."""
        self.db = db
        self._require_program = require_program
        db.ensure_schema(_SCHEMA)

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.db.connection().execute(sql, args)

    # -- agents ----------------------------------------------------------------

    def register(self, reg: fleet_pb2.Register) -> None:
        now = _now_ms()
        self._exec(
            """INSERT INTO fleet_agents VALUES (?,?,?,?,?,?,?,?,1,'',?,?)
               ON CONFLICT(agent_id) DO UPDATE SET labels=excluded.labels,
               inventory=excluded.inventory, backend=excluded.backend,
               program_sha256=excluded.program_sha256, previous_sha256=excluded.previous_sha256,
               version=excluded.version, health=excluded.health, connected=1,
               last_seen_ms=excluded.last_seen_ms""",
            (
                reg.agent_id,
                json.dumps(dict(reg.labels), sort_keys=True),
                json.dumps([_device_dict(d) for d in reg.inventory]),
                reg.backend,
                reg.program_sha256,
                reg.previous_sha256,
                reg.version,
                "ok" if reg.program_sha256 else "no-program",
                now,
                now,
            ),
        )

    def heartbeat(self, agent_id: str, beat: fleet_pb2.Heartbeat) -> None:
        self._exec(
            """UPDATE fleet_agents SET program_sha256=?, health=?, shadow_sha256=?,
               last_seen_ms=? WHERE agent_id=?""",
            (beat.program_sha256, beat.health, beat.shadow_sha256, _now_ms(), agent_id),
        )

    def set_connected(self, agent_id: str, connected: bool) -> None:
        self._exec(
            "UPDATE fleet_agents SET connected=?, last_seen_ms=? WHERE agent_id=?",
            (int(connected), _now_ms(), agent_id),
        )

    def set_program(self, agent_id: str, sha256: str) -> None:
        self._exec(
            """UPDATE fleet_agents SET previous_sha256=CASE WHEN program_sha256 != ?
               THEN program_sha256 ELSE previous_sha256 END, program_sha256=?,
               health='ok' WHERE agent_id=?""",
            (sha256, sha256, agent_id),
        )

    def agents(self) -> list[AgentRecord]:
        rows = self._exec("SELECT * FROM fleet_agents ORDER BY agent_id").fetchall()
        return [self._agent(row) for row in rows]

    def agent(self, agent_id: str) -> AgentRecord | None:
        row = self._exec("SELECT * FROM fleet_agents WHERE agent_id=?", (agent_id,)).fetchone()
        return self._agent(row) if row else None

    @staticmethod
    def _agent(row: tuple[Any, ...]) -> AgentRecord:
        return AgentRecord(
            agent_id=row[0],
            labels=json.loads(row[1]),
            inventory=json.loads(row[2]),
            backend=row[3],
            program_sha256=row[4],
            previous_sha256=row[5],
            version=row[6],
            health=row[7],
            connected=bool(row[8]),
            shadow_sha256=row[9],
            first_seen_ms=row[10],
            last_seen_ms=row[11],
        )

    def mark_all_disconnected(self) -> None:
        """At server start nobody is connected yet, whatever the file says."""
        self._exec("UPDATE fleet_agents SET connected=0")

    # -- assignments -----------------------------------------------------------

    def assign(
        self, agent_id: str, sha256: str, shadow_sha256: str = "", rollback: bool = False
    ) -> AssignmentRecord:
        now = _now_ms()
        with self.db.transaction() as conn:
            if self._require_program is not None:
                for program in filter(None, (sha256, shadow_sha256)):
                    self._require_program(conn, program)
            row = conn.execute(
                "SELECT generation FROM fleet_assignments WHERE agent_id=?", (agent_id,)
            ).fetchone()
            generation = (row[0] if row else 0) + 1
            conn.execute(
                "INSERT OR REPLACE INTO fleet_assignments VALUES (?,?,?,?,?,?)",
                (agent_id, sha256, shadow_sha256, int(rollback), generation, now),
            )
        return AssignmentRecord(agent_id, sha256, shadow_sha256, rollback, generation, now)

    def assignment(self, agent_id: str) -> AssignmentRecord | None:
        row = self._exec("SELECT * FROM fleet_assignments WHERE agent_id=?", (agent_id,)).fetchone()
        if row is None:
            return None
        return AssignmentRecord(row[0], row[1], row[2], bool(row[3]), row[4], row[5])

    def usage(self, sha256: str) -> list[str]:
        """Agents that run, keep for rollback, or are assigned ``sha256`` (registry deletes)."""
        rows = self._exec(
            """SELECT agent_id FROM fleet_agents WHERE program_sha256=?1 OR previous_sha256=?1
                   OR shadow_sha256=?1
               UNION SELECT agent_id FROM fleet_assignments WHERE sha256=?1 OR shadow_sha256=?1
               ORDER BY agent_id""",
            (sha256,),
        ).fetchall()
        return [row[0] for row in rows]

    def settle_rollback(self, agent_id: str, generation: int, sha256: str) -> None:
        """A rollback is done: the desired program is now the one rolled back to."""
        self._exec(
            """UPDATE fleet_assignments SET sha256=?, rollback=0
               WHERE agent_id=? AND generation=? AND rollback=1""",
            (sha256, agent_id, generation),
        )

    # -- installs --------------------------------------------------------------

    def record_install(self, agent_id: str, report: fleet_pb2.InstallReport) -> InstallRecord:
        now = _now_ms()
        status = fleet_pb2.InstallReport.Status.Name(report.status)
        cursor = self._exec(
            "INSERT INTO fleet_installs VALUES (NULL,?,?,?,?,?,?,?)",
            (agent_id, report.sha256, status, report.reason, report.detail, report.generation, now),
        )
        return InstallRecord(
            int(cursor.lastrowid or 0),
            agent_id,
            report.sha256,
            status,
            report.reason,
            report.detail,
            report.generation,
            now,
        )

    def installs(self, agent_id: str | None = None, after_id: int = 0) -> list[InstallRecord]:
        if agent_id is None:
            rows = self._exec(
                "SELECT * FROM fleet_installs WHERE id > ? ORDER BY id", (after_id,)
            ).fetchall()
        else:
            rows = self._exec(
                "SELECT * FROM fleet_installs WHERE agent_id=? AND id > ? ORDER BY id",
                (agent_id, after_id),
            ).fetchall()
        return [InstallRecord(*tuple(row)) for row in rows]

    # -- telemetry -------------------------------------------------------------

    def ingest(self, agent_id: str, batch: fleet_pb2.TelemetryBatch) -> bool:
        """Store one batch; False if this (agent, seq) was already stored or was refused."""
        return self.ingest_many([(agent_id, batch)])[0].new

    def ingest_many(
        self, items: list[tuple[str, fleet_pb2.TelemetryBatch]], seen: Sequence[str] = ()
    ) -> list[IngestResult]:
        """Store batches, and refresh the last_seen of the ``seen`` agents, in one
        transaction (one fsync); per batch, whether it was new or why it was refused."""
        now = _now_ms()
        stored = []
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE fleet_agents SET last_seen_ms=? WHERE agent_id=?",
                [(now, agent_id) for agent_id in seen],
            )
            for agent_id, batch in items:
                conn.execute("SAVEPOINT batch")
                try:
                    new = self._insert_batch(conn, now, agent_id, batch)
                except _ROW_ERRORS as exc:
                    conn.execute("ROLLBACK TO batch")
                    stored.append(IngestResult(False, f"not storable: {exc}"))
                else:
                    stored.append(IngestResult(new))
                finally:
                    conn.execute("RELEASE batch")
        return stored

    @staticmethod
    def _insert_batch(
        conn: sqlite3.Connection, now: int, agent_id: str, batch: fleet_pb2.TelemetryBatch
    ) -> bool:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO fleet_telemetry VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                agent_id,
                batch.seq,
                now,
                batch.start_unix_ms,
                batch.end_unix_ms,
                batch.program_sha256,
                batch.frames,
                batch.predictions,
                batch.errors,
                batch.latency_p99_ms,
                batch.shadow_sha256,
                batch.shadow_frames,
                batch.shadow_agreements,
                batch.SerializeToString(),
            ),
        )
        return cursor.rowcount == 1

    def prune_telemetry(self, older_than_ms: int, max_per_agent: int) -> int:
        """Delete batches received before ``older_than_ms`` (0: none) and all but the
        newest ``max_per_agent`` of each agent (0: no cap); return how many went."""
        deleted = 0
        with self.db.transaction() as conn:
            if older_than_ms:
                deleted += conn.execute(
                    "DELETE FROM fleet_telemetry WHERE received_ms < ?", (older_than_ms,)
                ).rowcount
            if max_per_agent:
                over = conn.execute(
                    """SELECT agent_id FROM fleet_telemetry GROUP BY agent_id
                       HAVING COUNT(*) > ?""",
                    (max_per_agent,),
                ).fetchall()
                for (agent_id,) in over:
                    deleted += conn.execute(
                        """DELETE FROM fleet_telemetry WHERE agent_id=?1 AND seq <= (
                             SELECT seq FROM fleet_telemetry WHERE agent_id=?1
                             ORDER BY seq DESC LIMIT 1 OFFSET ?2)""",
                        (agent_id, max_per_agent),
                    ).rowcount
        return deleted

    def delete_agent(self, agent_id: str) -> tuple[int, int] | None:
        """Forget an agent (record, assignment, installs, telemetry) in one transaction;
        (telemetry rows, install rows) deleted, or None if it was unknown."""
        with self.db.transaction() as conn:
            found = conn.execute("DELETE FROM fleet_agents WHERE agent_id=?", (agent_id,)).rowcount
            assigned = conn.execute(
                "DELETE FROM fleet_assignments WHERE agent_id=?", (agent_id,)
            ).rowcount
            installs = conn.execute(
                "DELETE FROM fleet_installs WHERE agent_id=?", (agent_id,)
            ).rowcount
            telemetry = conn.execute(
                "DELETE FROM fleet_telemetry WHERE agent_id=?", (agent_id,)
            ).rowcount
        if not (found or assigned or installs or telemetry):
            return None
        return telemetry, installs

    def last_telemetry_seq(self, agent_id: str) -> int:
        row = self._exec(
            "SELECT MAX(seq) FROM fleet_telemetry WHERE agent_id=?", (agent_id,)
        ).fetchone()
        return int(row[0] or 0)

    def telemetry(
        self, agent_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[TelemetryRecord]:
        rows = self._exec(
            """SELECT agent_id, seq, received_ms, body FROM fleet_telemetry
               WHERE agent_id=? AND seq > ? ORDER BY seq LIMIT ?""",
            (agent_id, after_seq, limit),
        ).fetchall()
        return [
            TelemetryRecord(r[0], r[1], r[2], fleet_pb2.TelemetryBatch.FromString(r[3]))
            for r in rows
        ]

    def telemetry_since(
        self, since_ms: int, agent_ids: list[str] | None = None
    ) -> list[TelemetryRecord]:
        """Batches received at or after ``since_ms`` (for health gates), oldest first."""
        rows = self._exec(
            """SELECT agent_id, seq, received_ms, body FROM fleet_telemetry
               WHERE received_ms >= ? ORDER BY received_ms, agent_id, seq""",
            (since_ms,),
        ).fetchall()
        wanted = set(agent_ids) if agent_ids is not None else None
        return [
            TelemetryRecord(r[0], r[1], r[2], fleet_pb2.TelemetryBatch.FromString(r[3]))
            for r in rows
            if wanted is None or r[0] in wanted
        ]
