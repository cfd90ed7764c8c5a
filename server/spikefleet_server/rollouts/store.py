"""Rollouts in the server's SQLite file: every controller step is one transaction.

A server killed at any moment finds each rollout exactly as its last committed
step left it, and the controller carries on from there.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from typing import Any

from spikefleet.errors import RolloutNotFoundError
from spikefleet_server.db import Database
from spikefleet_server.rollouts.model import (
    ACTIVE_STATES,
    GateResult,
    Gates,
    Rollout,
    RolloutAgent,
    RolloutEvent,
    RolloutSpec,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    phase INTEGER NOT NULL,
    phases INTEGER NOT NULL,
    canary INTEGER NOT NULL,
    stage TEXT NOT NULL,
    stage_started_ms INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    gates TEXT NOT NULL DEFAULT '[]',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts(state);
CREATE TABLE IF NOT EXISTS rollout_agents (
    rollout_id TEXT NOT NULL REFERENCES rollouts(rollout_id),
    agent_id TEXT NOT NULL,
    phase INTEGER NOT NULL,
    from_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    status_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, agent_id)
);
CREATE TABLE IF NOT EXISTS rollout_events (
    rollout_id TEXT NOT NULL REFERENCES rollouts(rollout_id),
    seq INTEGER NOT NULL,
    unix_ms INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);
"""

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
    """The rollout tables in the server's shared SQLite database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def create(self, rollout: Rollout, events: list[str]) -> Rollout:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rollout.rollout_id,
                    spec_to_json(rollout.spec),
                    rollout.state,
                    rollout.phase,
                    rollout.phases,
                    int(rollout.canary),
                    rollout.stage,
                    rollout.stage_started_unix_ms,
                    rollout.reason,
                    _gates_json(rollout.gates),
                    rollout.created_unix_ms,
                    rollout.updated_unix_ms,
                    rollout.version,
                ),
            )
            _write_agents(conn, rollout, rollout.agents)
            _append_events(conn, rollout.rollout_id, rollout.updated_unix_ms, events)
        return self.get(rollout.rollout_id)

    def save(
        self, rollout: Rollout, events: list[str], changed: list[RolloutAgent] | None = None
    ) -> Rollout:
        """Commit the rollout (row, ``changed`` agents or all, new events) in one transaction,
        if nobody else committed it since it was read."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE rollouts SET state=?, phase=?, stage=?, stage_started_ms=?, reason=?,"
                " gates=?, updated_ms=?, version=version+1 WHERE rollout_id=? AND version=?",
                (
                    rollout.state,
                    rollout.phase,
                    rollout.stage,
                    rollout.stage_started_unix_ms,
                    rollout.reason,
                    _gates_json(rollout.gates),
                    rollout.updated_unix_ms,
                    rollout.rollout_id,
                    rollout.version,
                ),
            )
            if cursor.rowcount != 1:
                raise ConcurrentUpdateError(f"rollout {rollout.rollout_id} changed meanwhile")
            _write_agents(conn, rollout, rollout.agents if changed is None else changed)
            _append_events(conn, rollout.rollout_id, rollout.updated_unix_ms, events)
        return self.get(rollout.rollout_id)

    def get(self, rollout_id: str) -> Rollout:
        conn = self.db.connection()
        row = conn.execute("SELECT * FROM rollouts WHERE rollout_id=?", (rollout_id,)).fetchone()
        if row is None:
            raise RolloutNotFoundError(
                f"no rollout {rollout_id!r}: `spikefleet rollout status` lists them"
            )
        return self._load(conn, tuple(row))

    def list_rollouts(self, *, active_only: bool = False) -> list[Rollout]:
        conn = self.db.connection()
        if active_only:
            marks = ",".join("?" * len(ACTIVE_STATES))
            rows = conn.execute(
                f"SELECT * FROM rollouts WHERE state IN ({marks}) ORDER BY created_ms",
                tuple(sorted(ACTIVE_STATES)),
            ).fetchall()
        else:
            rows = conn.execute("SELECT * FROM rollouts ORDER BY created_ms").fetchall()
        return [self._load(conn, tuple(row)) for row in rows]

    @staticmethod
    def _load(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Rollout:
        rid, spec, state, phase, phases, canary, stage, started, reason, gates = row[:10]
        created, updated, version = row[10:]
        agents = [
            RolloutAgent(*tuple(r))
            for r in conn.execute(
                "SELECT agent_id, phase, from_sha256, status, detail, status_ms"
                " FROM rollout_agents WHERE rollout_id=? ORDER BY phase, agent_id",
                (rid,),
            )
        ]
        events = [
            RolloutEvent(*tuple(r))
            for r in conn.execute(
                "SELECT unix_ms, message FROM (SELECT seq, unix_ms, message FROM rollout_events"
                " WHERE rollout_id=? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (rid, EVENTS_SHOWN),
            )
        ]
        return Rollout(
            rollout_id=rid,
            spec=spec_from_json(spec),
            state=state,
            phase=phase,
            phases=phases,
            stage=stage,
            stage_started_unix_ms=started,
            created_unix_ms=created,
            updated_unix_ms=updated,
            canary=bool(canary),
            version=version,
            reason=reason,
            agents=agents,
            events=events,
            gates=[GateResult(**g) for g in json.loads(gates)],
        )


def _write_agents(conn: sqlite3.Connection, rollout: Rollout, agents: list[RolloutAgent]) -> None:
    conn.executemany(
        "INSERT INTO rollout_agents VALUES (?,?,?,?,?,?,?)"
        " ON CONFLICT(rollout_id, agent_id) DO UPDATE SET phase=excluded.phase,"
        " status=excluded.status, detail=excluded.detail, status_ms=excluded.status_ms",
        [
            (
                rollout.rollout_id,
                a.agent_id,
                a.phase,
                a.from_sha256,
                a.status,
                a.detail,
                a.status_unix_ms,
            )
            for a in agents
        ],
    )


def _append_events(
    conn: sqlite3.Connection, rollout_id: str, unix_ms: int, events: list[str]
) -> None:
    if not events:
        return
    (last,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM rollout_events WHERE rollout_id=?", (rollout_id,)
    ).fetchone()
    conn.executemany(
        "INSERT INTO rollout_events VALUES (?,?,?,?)",
        [(rollout_id, last + i, unix_ms, msg) for i, msg in enumerate(events, start=1)],
    )


def _gates_json(gates: list[GateResult]) -> str:
    return json.dumps([asdict(g) for g in gates])
