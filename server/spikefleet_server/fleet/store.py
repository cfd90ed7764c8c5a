"""The fleet area in the server's database: agents, their assignments and install reports.

Every public method is async and runs its transaction on the storage threads; the
``_``-prefixed twins are the blocking SQL, and the static ones that take a
``Connection`` run inside another area's transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spikefleet.v1 import fleet_pb2
from spikefleet_server.replicas import ASSIGNMENTS, FLEET, fleet_payloads, notify
from spikefleet_server.storage import Database
from spikefleet_server.storage.groups import Grouped
from spikefleet_server.storage.schema import (
    fleet_agents,
    fleet_assignments,
    fleet_installs,
    fleet_telemetry,
)
from spikefleet_server.storage.sql import dialect_insert, insert, now_ms


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


@dataclass(frozen=True)
class Registration:
    """What an agent's session starts from, read in its Register's transaction: the last
    telemetry seq stored for it (0: none) and its desired state (None: none assigned)."""

    last_telemetry_seq: int
    assignment: AssignmentRecord | None


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


# What a Register overwrites in an agent's row; shadow_sha256 and first_seen_ms are kept.
_REGISTERED = (
    "labels",
    "inventory",
    "backend",
    "program_sha256",
    "previous_sha256",
    "version",
    "health",
    "connected",
    "last_seen_ms",
    "replica_id",
)

_ASSIGNMENT_OF = sa.select(fleet_assignments).where(
    fleet_assignments.c.agent_id == sa.bindparam("agent_id")
)
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
_ASSIGNMENTS_OF = sa.select(fleet_assignments).where(fleet_assignments.c.agent_id.in_(_IDS))
# per agent its own max(seq) (the primary key's index answers each at once; a GROUP BY
# over the agents would read every row they ever stored)
_LAST_SEQS = sa.select(
    fleet_agents.c.agent_id,
    sa.select(sa.func.max(fleet_telemetry.c.seq))
    .where(fleet_telemetry.c.agent_id == fleet_agents.c.agent_id)
    .scalar_subquery(),
).where(fleet_agents.c.agent_id.in_(_IDS))

# Registers (and disconnects) arriving while one transaction runs go together into the
# next (a storm of 2,500 redialling agents: a few dozen transactions, not 2,500)
REGISTER_GROUP = 256


@functools.cache
def _register_statement(dialect: str) -> Any:
    """The Register upsert, built once per dialect and executed with each agent's values."""
    columns = ("agent_id", "shadow_sha256", "first_seen_ms", *_REGISTERED)
    statement = dialect_insert(dialect, fleet_agents).values(
        {name: sa.bindparam(name) for name in columns}
    )
    return statement.on_conflict_do_update(
        index_elements=[fleet_agents.c.agent_id],
        set_={name: statement.excluded[name] for name in _REGISTERED},
    )


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
        replica_id: Callable[[], int] = lambda: 0,
    ) -> None:
        """``require_program(conn, sha256)`` raises unless the program exists; it runs
        inside the assignment's transaction (the registry's deletes check usage in
        theirs), so a program can't be deleted between the check and the assignment.
        ``replica_id()`` is the id this server records its agents' streams under (0: a
        lone server; see :class:`spikefleet_server.replicas.Liveness`)."""
        self.db = db
        self._require_program = require_program
        self._replica_id = replica_id
        self._registers = Grouped(
            self._register_group, key=lambda reg: reg.agent_id, max_group=REGISTER_GROUP
        )
        self._disconnects = Grouped(
            self._disconnect_group, key=lambda agent_id: agent_id, max_group=REGISTER_GROUP
        )

    # -- agents ----------------------------------------------------------------

    async def register(self, reg: fleet_pb2.Register) -> Registration:
        """Record the agent as connected with what it registered, and read back what its
        session starts from, in one transaction; Registers made meanwhile share it (one
        round of the storage threads and one commit per group: a fleet redialling after
        a replica died registers thousands at once)."""
        return await self._registers(reg)

    async def _register_group(self, regs: list[fleet_pb2.Register]) -> list[Registration]:
        return await self.db.run(self._register_many, regs)

    def _register(self, reg: fleet_pb2.Register) -> Registration:
        return self._register_many([reg])[0]

    def _register_many(self, regs: list[fleet_pb2.Register]) -> list[Registration]:
        """Register each in one transaction, as if one after the other (of an agent
        listed twice, the later Register is what stays)."""
        now = now_ms()
        replica = self._replica_id()
        rows = {reg.agent_id: _registered_row(reg, now, replica) for reg in regs}
        ids = list(rows)
        with self.db.write() as conn:
            conn.execute(_register_statement(conn.dialect.name), list(rows.values()))
            for payload in fleet_payloads("connected", ids):  # the rollout leader's news
                notify(conn, FLEET, payload)
            last_seqs = {row[0]: row[1] for row in conn.execute(_LAST_SEQS, {"ids": ids})}
            assignments = {
                row.agent_id: _assignment_record(row)
                for row in conn.execute(_ASSIGNMENTS_OF, {"ids": ids})
            }
        return [
            Registration(int(last_seqs.get(reg.agent_id) or 0), assignments.get(reg.agent_id))
            for reg in regs
        ]

    async def heartbeat(self, agent_id: str, beat: fleet_pb2.Heartbeat) -> None:
        await self.db.run(
            self._update_agent,
            agent_id,
            program_sha256=beat.program_sha256,
            health=beat.health,
            shadow_sha256=beat.shadow_sha256,
            last_seen_ms=now_ms(),
        )

    async def set_connected(self, agent_id: str, connected: bool) -> None:
        await self.db.run(self._update_agent, agent_id, connected=connected, last_seen_ms=now_ms())

    async def disconnected(self, agent_id: str) -> bool:
        """Record the agent's stream here as ended, unless it is recorded at another
        replica by now (it reconnected there first); whether the record changed.
        Disconnects made meanwhile share the transaction."""
        return await self._disconnects(agent_id)

    async def _disconnect_group(self, agent_ids: list[str]) -> list[bool]:
        changed = await self.db.run(self._disconnected_many, agent_ids)
        return [agent_id in changed for agent_id in agent_ids]

    def _disconnected(self, agent_id: str) -> bool:
        return agent_id in self._disconnected_many([agent_id])

    def _disconnected_many(self, agent_ids: list[str]) -> set[str]:
        agents = fleet_agents.c
        with self.db.write() as conn:
            changed = set(
                conn.scalars(
                    sa.update(fleet_agents)
                    .where(agents.agent_id.in_(agent_ids), agents.replica_id == self._replica_id())
                    .values(connected=False, last_seen_ms=now_ms())
                    .returning(agents.agent_id)
                )
            )
            for payload in fleet_payloads("disconnected", sorted(changed)):
                notify(conn, FLEET, payload)
        return changed

    # -- replicas (see spikefleet_server.replicas.Liveness) --------------------

    def replicas_with_connected_agents(self, exclude: int) -> list[int]:
        """Replica ids other than ``exclude`` that agents are recorded connected at."""
        agents = fleet_agents.c
        with self.db.read() as conn:
            return list(
                conn.scalars(
                    sa.select(agents.replica_id)
                    .where(agents.connected.is_(True), agents.replica_id != exclude)
                    .distinct()
                )
            )

    def release_replica(self, replica_id: int) -> int:
        """Record every agent connected at ``replica_id`` (gone) as disconnected."""
        agents = fleet_agents.c
        with self.db.write() as conn:
            count = conn.execute(
                sa.update(fleet_agents)
                .where(agents.replica_id == replica_id, agents.connected.is_(True))
                .values(connected=False)
            ).rowcount
            if count:
                notify(conn, FLEET, "disconnected ")  # any of them
        return int(count)

    async def reclaim(self, agent_ids: Sequence[str], old_id: int, new_id: int) -> int:
        """This replica's liveness lapsed (and its id may have changed): record the agents
        whose streams it still holds as connected here, unless another replica has them."""
        return await self.db.run(self._reclaim, list(agent_ids), old_id, new_id)

    def _reclaim(self, agent_ids: list[str], old_id: int, new_id: int) -> int:
        if not agent_ids:
            return 0
        agents = fleet_agents.c
        with self.db.write() as conn:
            count = conn.execute(
                sa.update(fleet_agents)
                .where(agents.agent_id.in_(agent_ids), agents.replica_id.in_({old_id, new_id}))
                .values(connected=True, replica_id=new_id)
            ).rowcount
            if count:
                notify(conn, FLEET, "connected ")
        return int(count)

    def _update_agent(self, agent_id: str, **values: Any) -> None:
        with self.db.write() as conn:
            conn.execute(
                sa.update(fleet_agents).where(fleet_agents.c.agent_id == agent_id).values(**values)
            )

    async def mark_all_disconnected(self) -> None:
        """At server start nobody is connected yet, whatever the database says."""
        await self.db.run(self._mark_all_disconnected)

    def _mark_all_disconnected(self) -> None:
        with self.db.write() as conn:
            conn.execute(sa.update(fleet_agents).values(connected=False))

    async def agents(self) -> list[AgentRecord]:
        return await self.db.run(self._agents)

    def _agents(self) -> list[AgentRecord]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(fleet_agents).order_by(fleet_agents.c.agent_id))
            return [_agent_record(row) for row in rows]

    async def agent(self, agent_id: str) -> AgentRecord | None:
        return await self.db.run(self._agent, agent_id)

    def _agent(self, agent_id: str) -> AgentRecord | None:
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(fleet_agents).where(fleet_agents.c.agent_id == agent_id)
            ).first()
        return _agent_record(row) if row else None

    async def delete_agent(self, agent_id: str) -> tuple[int, int] | None:
        """Forget an agent (record, assignment, installs, telemetry) in one transaction;
        (telemetry rows, install rows) deleted, or None if it was unknown."""
        return await self.db.run(self._delete_agent, agent_id)

    def _delete_agent(self, agent_id: str) -> tuple[int, int] | None:
        with self.db.write() as conn:
            counts = [
                conn.execute(sa.delete(table).where(table.c.agent_id == agent_id)).rowcount
                for table in (fleet_agents, fleet_assignments, fleet_installs, fleet_telemetry)
            ]
        if not any(counts):
            return None
        return counts[3], counts[2]

    # -- assignments -----------------------------------------------------------

    async def assign(
        self, agent_id: str, sha256: str, shadow_sha256: str = "", rollback: bool = False
    ) -> AssignmentRecord:
        """Store the agent's desired state; its generation counts up by one."""
        return await self.db.run(self._assign, agent_id, sha256, shadow_sha256, rollback)

    def _assign(
        self, agent_id: str, sha256: str, shadow_sha256: str, rollback: bool
    ) -> AssignmentRecord:
        return self._assign_many([(agent_id, sha256, shadow_sha256, rollback)])[0]

    async def assign_many(
        self, assignments: Sequence[tuple[str, str, str, bool]]
    ) -> list[AssignmentRecord]:
        """:meth:`assign` for several (agent_id, sha256, shadow_sha256, rollback), in one
        transaction."""
        return await self.db.run(self._assign_many, list(assignments))

    def _assign_many(self, assignments: list[tuple[str, str, str, bool]]) -> list[AssignmentRecord]:
        now = now_ms()
        records = []
        with self.db.write() as conn:
            if self._require_program is not None:
                needed = {p for _, sha, shadow, _ in assignments for p in (sha, shadow) if p}
                for program in sorted(needed):
                    self._require_program(conn, program)
            for agent_id, sha256, shadow_sha256, rollback in assignments:
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
                records.append(
                    AssignmentRecord(agent_id, sha256, shadow_sha256, rollback, generation, now)
                )
                # the replica holding this agent's stream pushes it (delivered on commit)
                notify(conn, ASSIGNMENTS, f"{agent_id} {generation}")
        return records

    async def assignment(self, agent_id: str) -> AssignmentRecord | None:
        return await self.db.run(self._assignment, agent_id)

    def _assignment(self, agent_id: str) -> AssignmentRecord | None:
        with self.db.read() as conn:
            return self._assignment_in(conn, agent_id)

    @staticmethod
    def _assignment_in(conn: Connection, agent_id: str) -> AssignmentRecord | None:
        row = conn.execute(_ASSIGNMENT_OF, {"agent_id": agent_id}).first()
        return None if row is None else _assignment_record(row)

    async def usage(self, sha256: str) -> list[str]:
        """Agents that run, keep for rollback, or are assigned ``sha256``."""
        return await self.db.run(self._usage, sha256)

    def _usage(self, sha256: str) -> list[str]:
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

    # -- installs --------------------------------------------------------------

    async def record_install(self, agent_id: str, report: fleet_pb2.InstallReport) -> InstallRecord:
        """Store an install report with its effect on the agent (its program, a settled
        rollback) in one transaction: whoever sees the report sees the effect too."""
        return await self.db.run(self._record_install, agent_id, report)

    def _record_install(self, agent_id: str, report: fleet_pb2.InstallReport) -> InstallRecord:
        now = now_ms()
        status = fleet_pb2.InstallReport.Status.Name(report.status)
        agents, assigned = fleet_agents.c, fleet_assignments.c
        with self.db.write() as conn:
            if report.status in (
                fleet_pb2.InstallReport.INSTALLED,
                fleet_pb2.InstallReport.ROLLED_BACK,
            ):
                conn.execute(
                    sa.update(fleet_agents)
                    .where(agents.agent_id == agent_id)
                    .values(
                        previous_sha256=sa.case(
                            (agents.program_sha256 != report.sha256, agents.program_sha256),
                            else_=agents.previous_sha256,
                        ),
                        program_sha256=report.sha256,
                        health="ok",
                    )
                )
            if report.status == fleet_pb2.InstallReport.ROLLED_BACK:
                # the rollback is done: the desired program is now the one rolled back to
                conn.execute(
                    sa.update(fleet_assignments)
                    .where(
                        assigned.agent_id == agent_id,
                        assigned.generation == report.generation,
                        assigned.rollback.is_(True),
                    )
                    .values(sha256=report.sha256, rollback=False)
                )
            notify(conn, FLEET, f"install {agent_id}")
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

    async def installs(self, agent_id: str | None = None, after_id: int = 0) -> list[InstallRecord]:
        """Install reports after ``after_id`` (of one agent, or all), oldest first."""
        return await self.db.run(self._installs, agent_id, after_id)

    def _installs(self, agent_id: str | None, after_id: int) -> list[InstallRecord]:
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


def _registered_row(reg: fleet_pb2.Register, now: int, replica_id: int) -> dict[str, Any]:
    return {
        "agent_id": reg.agent_id,
        "labels": json.dumps(dict(reg.labels), sort_keys=True),
        "inventory": json.dumps([_device_dict(d) for d in reg.inventory]),
        "backend": reg.backend,
        "program_sha256": reg.program_sha256,
        "previous_sha256": reg.previous_sha256,
        "version": reg.version,
        "health": "ok" if reg.program_sha256 else "no-program",
        "connected": True,
        "shadow_sha256": "",
        "first_seen_ms": now,
        "last_seen_ms": now,
        "replica_id": replica_id,
    }


def _assignment_record(row: Any) -> AssignmentRecord:
    return AssignmentRecord(
        row.agent_id,
        row.sha256,
        row.shadow_sha256,
        bool(row.rollback),
        row.generation,
        row.updated_ms,
    )


def _agent_record(row: Any) -> AgentRecord:
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
