"""Rollouts in the server's database: every controller step is one transaction.

A server killed at any moment finds each rollout exactly as its last committed
step left it, and the controller carries on from there.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spikefleet.errors import RolloutNotFoundError
from spikefleet_server.rollouts.model import (
    ACTIVE_STATES,
    AgentStatus,
    GateResult,
    Gates,
    Rollout,
    RolloutAgent,
    RolloutEvent,
    RolloutSpec,
    RolloutState,
    Stage,
)
from spikefleet_server.storage import Database
from spikefleet_server.storage.schema import rollout_agents, rollout_events, rollouts
from spikefleet_server.storage.sql import insert

EVENTS_SHOWN = 200


class ConcurrentUpdateError(RuntimeError):
    """Someone committed this rollout since it was read (a bug: steps are serialized)."""


def spec_to_json(spec: RolloutSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True)


def spec_from_json(text: str) -> RolloutSpec:
    data: dict[str, Any] = json.loads(text)
    data["gates"] = Gates(**data["gates"])
    data["waves"] = tuple(data["waves"])
    return RolloutSpec(**data)


class RolloutStore:
    """The rollouts area: the rollout tables in the server's database (async methods,
    transactions on the storage threads)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, rollout: Rollout, events: list[str]) -> Rollout:
        return await self.db.run(self._create, rollout, events)

    def _create(self, rollout: Rollout, events: list[str]) -> Rollout:
        with self.db.write() as conn:
            conn.execute(
                sa.insert(rollouts).values(
                    rollout_id=rollout.rollout_id,
                    spec=spec_to_json(rollout.spec),
                    state=str(rollout.state),
                    phase=rollout.phase,
                    phases=rollout.phases,
                    canary=rollout.canary,
                    stage=str(rollout.stage),
                    stage_started_ms=rollout.stage_started_unix_ms,
                    reason=rollout.reason,
                    gates=_gates_json(rollout.gates),
                    created_ms=rollout.created_unix_ms,
                    updated_ms=rollout.updated_unix_ms,
                    version=rollout.version,
                )
            )
            _write_agents(conn, rollout, rollout.agents)
            _append_events(conn, rollout.rollout_id, rollout.updated_unix_ms, events)
            return self._get(conn, rollout.rollout_id)

    async def save(
        self, rollout: Rollout, events: list[str], changed: list[RolloutAgent] | None = None
    ) -> Rollout:
        """Commit the rollout (row, ``changed`` agents or all, new events) in one transaction,
        if nobody else committed it since it was read."""
        return await self.db.run(self._save, rollout, events, changed)

    def _save(
        self, rollout: Rollout, events: list[str], changed: list[RolloutAgent] | None
    ) -> Rollout:
        with self.db.write() as conn:
            result = conn.execute(
                sa.update(rollouts)
                .where(
                    rollouts.c.rollout_id == rollout.rollout_id,
                    rollouts.c.version == rollout.version,
                )
                .values(
                    state=str(rollout.state),
                    phase=rollout.phase,
                    stage=str(rollout.stage),
                    stage_started_ms=rollout.stage_started_unix_ms,
                    reason=rollout.reason,
                    gates=_gates_json(rollout.gates),
                    updated_ms=rollout.updated_unix_ms,
                    version=rollouts.c.version + 1,
                )
            )
            if result.rowcount != 1:
                raise ConcurrentUpdateError(f"rollout {rollout.rollout_id} changed meanwhile")
            _write_agents(conn, rollout, rollout.agents if changed is None else changed)
            _append_events(conn, rollout.rollout_id, rollout.updated_unix_ms, events)
            return self._get(conn, rollout.rollout_id)

    async def get(self, rollout_id: str) -> Rollout:
        return await self.db.run(self._read_one, rollout_id)

    def _read_one(self, rollout_id: str) -> Rollout:
        with self.db.read() as conn:
            return self._get(conn, rollout_id)

    async def version(self, rollout_id: str) -> int:
        """The rollout's committed version (cheap: for watchers waiting for a change)."""
        return await self.db.run(self._version, rollout_id)

    def _version(self, rollout_id: str) -> int:
        with self.db.read() as conn:
            version = conn.execute(
                sa.select(rollouts.c.version).where(rollouts.c.rollout_id == rollout_id)
            ).scalar()
        if version is None:
            raise _not_found(rollout_id)
        return int(version)

    def _get(self, conn: Connection, rollout_id: str) -> Rollout:
        row = conn.execute(sa.select(rollouts).where(rollouts.c.rollout_id == rollout_id)).first()
        if row is None:
            raise _not_found(rollout_id)
        return self._load(conn, row)

    async def list_rollouts(self, *, active_only: bool = False) -> list[Rollout]:
        return await self.db.run(self._list, active_only)

    def _list(self, active_only: bool) -> list[Rollout]:
        query = sa.select(rollouts).order_by(rollouts.c.created_ms, rollouts.c.rollout_id)
        if active_only:
            query = query.where(rollouts.c.state.in_(sorted(ACTIVE_STATES)))
        with self.db.read() as conn:
            return [self._load(conn, row) for row in conn.execute(query).all()]

    @staticmethod
    def _load(conn: Connection, row: Any) -> Rollout:
        a = rollout_agents.c
        agents = [
            RolloutAgent(
                r.agent_id, r.phase, r.from_sha256, AgentStatus(r.status), r.detail, r.status_ms
            )
            for r in conn.execute(
                sa.select(a.agent_id, a.phase, a.from_sha256, a.status, a.detail, a.status_ms)
                .where(a.rollout_id == row.rollout_id)
                .order_by(a.phase, a.agent_id)
            )
        ]
        e = rollout_events.c
        newest = (
            sa.select(e.seq, e.unix_ms, e.message)
            .where(e.rollout_id == row.rollout_id)
            .order_by(e.seq.desc())
            .limit(EVENTS_SHOWN)
            .subquery()
        )
        events = [
            RolloutEvent(r.unix_ms, r.message)
            for r in conn.execute(
                sa.select(newest.c.unix_ms, newest.c.message).order_by(newest.c.seq)
            )
        ]
        return Rollout(
            rollout_id=row.rollout_id,
            spec=spec_from_json(row.spec),
            state=RolloutState(row.state),
            phase=row.phase,
            phases=row.phases,
            stage=Stage(row.stage),
            stage_started_unix_ms=row.stage_started_ms,
            created_unix_ms=row.created_ms,
            updated_unix_ms=row.updated_ms,
            canary=bool(row.canary),
            version=row.version,
            reason=row.reason,
            agents=agents,
            events=events,
            gates=[GateResult(**g) for g in json.loads(row.gates)],
        )


def _not_found(rollout_id: str) -> RolloutNotFoundError:
    return RolloutNotFoundError(
        f"no rollout {rollout_id!r}: `spikefleet rollout status` lists them"
    )


def _write_agents(conn: Connection, rollout: Rollout, agents: list[RolloutAgent]) -> None:
    if not agents:
        return
    statement = insert(conn, rollout_agents)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[rollout_agents.c.rollout_id, rollout_agents.c.agent_id],
            set_={
                key: statement.excluded[key] for key in ("phase", "status", "detail", "status_ms")
            },
        ),
        [
            {
                "rollout_id": rollout.rollout_id,
                "agent_id": a.agent_id,
                "phase": a.phase,
                "from_sha256": a.from_sha256,
                "status": str(a.status),
                "detail": a.detail,
                "status_ms": a.status_unix_ms,
            }
            for a in agents
        ],
    )


def _append_events(conn: Connection, rollout_id: str, unix_ms: int, events: list[str]) -> None:
    if not events:
        return
    last = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(rollout_events.c.seq), 0)).where(
            rollout_events.c.rollout_id == rollout_id
        )
    ).scalar_one()
    conn.execute(
        sa.insert(rollout_events),
        [
            {"rollout_id": rollout_id, "seq": last + i, "unix_ms": unix_ms, "message": msg}
            for i, msg in enumerate(events, start=1)
        ],
    )


def _gates_json(gates: list[GateResult]) -> str:
    return json.dumps([asdict(g) for g in gates])
