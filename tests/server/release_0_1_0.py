"""A database exactly as spikefleet-server 0.1.0 made it: its schema scripts and its
INSERT statements, copied from that release (before migrations existed), filled with
programs, agents, an assignment, installs, telemetry and a rollout.

``make(data_dir, key)`` writes ``spikefleet.db`` and the program files there and
returns what it stored, for the upgrade test to find again.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from spikefleet.program.signing import SigningKey, sign
from spikefleet.v1 import fleet_pb2

# -- the 0.1.0 schema, verbatim -----------------------------------------------------------

REGISTRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS programs (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    labels TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS program_versions (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
"""

FLEET_SCHEMA = """
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

ROLLOUT_SCHEMA = """
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


@dataclass
class Made:
    programs: dict[str, tuple[str, int]] = field(default_factory=dict)  # sha256 -> (name, v)
    agents: list[str] = field(default_factory=list)
    telemetry: dict[str, list[int]] = field(default_factory=dict)  # agent -> seqs
    rollout_id: str = "r0001"


def make(data_dir: Path, key: SigningKey) -> Made:
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / "spikefleet.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for script in (REGISTRY_SCHEMA, FLEET_SCHEMA, ROLLOUT_SCHEMA):
        conn.executescript(script)
    made = Made()
    conn.execute("BEGIN IMMEDIATE")
    for version, body in enumerate((b"program one", b"program two"), start=1):
        signed = sign(body, key)
        envelope = signed.to_bytes()
        path = data_dir / "programs" / signed.sha256[:2] / f"{signed.sha256}.sfp"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(envelope)
        conn.execute(
            "INSERT INTO program_versions (name, last_version) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version",
            ("digits", version),
        )
        conn.execute(
            "INSERT INTO programs (sha256, name, version, labels, fidelity, "
            "created_unix_ms, size, key_id, source_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                signed.sha256,
                "digits",
                version,
                json.dumps({"task": "nd"}, sort_keys=True),
                json.dumps({"agreement": 0.99}, sort_keys=True),
                1_700_000_000_000 + version,
                len(envelope),
                signed.key_id,
                "ab" * 32,
            ),
        )
        made.programs[signed.sha256] = ("digits", version)
    old, new = list(made.programs)
    for i, agent_id in enumerate(("edge-01", "edge-02")):
        conn.execute(
            """INSERT INTO fleet_agents VALUES (?,?,?,?,?,?,?,?,1,'',?,?)
               ON CONFLICT(agent_id) DO UPDATE SET labels=excluded.labels,
               inventory=excluded.inventory, backend=excluded.backend,
               program_sha256=excluded.program_sha256, previous_sha256=excluded.previous_sha256,
               version=excluded.version, health=excluded.health, connected=1,
               last_seen_ms=excluded.last_seen_ms""",
            (
                agent_id,
                json.dumps({"site": "lab"}, sort_keys=True),
                json.dumps([{"kind": "akida", "bus": "pci", "vendor_id": 0x1E7C}]),
                "sim",
                new if i == 0 else old,
                old if i == 0 else "",
                "0.1.0",
                "ok",
                1_700_000_000_000,
                1_700_000_000_500 + i,
            ),
        )
        made.agents.append(agent_id)
    conn.execute(
        "INSERT OR REPLACE INTO fleet_assignments VALUES (?,?,?,?,?,?)",
        ("edge-01", new, "", 0, 3, 1_700_000_000_600),
    )
    for agent_id, sha, status in (("edge-01", new, "INSTALLED"), ("edge-02", new, "FAILED")):
        conn.execute(
            "INSERT INTO fleet_installs VALUES (NULL,?,?,?,?,?,?,?)",
            (
                agent_id,
                sha,
                status,
                "" if status == "INSTALLED" else "bad-signature",
                "",
                3,
                1_700_000_000_700,
            ),
        )
    for agent_id, seqs in (("edge-01", [1, 2, 3]), ("edge-02", [1])):
        for seq in seqs:
            batch = fleet_pb2.TelemetryBatch(
                seq=seq, frames=100 * seq, errors=seq - 1, program_sha256=new, latency_p99_ms=1.5
            )
            conn.execute(
                "INSERT OR IGNORE INTO fleet_telemetry VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    agent_id,
                    batch.seq,
                    1_700_000_001_000 + seq,
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
        made.telemetry[agent_id] = seqs
    spec = {
        "program_sha256": new,
        "selector": {"site": "lab"},
        "canary_count": 1,
        "canary_percent": 0.0,
        "waves": [100.0],
        "bake_s": 30.0,
        "gates": {
            "max_error_rate": 0.01,
            "max_p99_ms": 0.0,
            "min_agreement": 0.0,
            "min_shadow_frames": 1,
        },
        "install_timeout_s": 120.0,
        "max_failed_installs": 0,
    }
    conn.execute(
        "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            made.rollout_id,
            json.dumps(spec, sort_keys=True),
            "rolling-back",
            1,
            2,
            1,
            "",
            1_700_000_002_000,
            "installs failed on edge-02 (bad-signature)",
            json.dumps(
                [
                    {
                        "name": "installs",
                        "passed": False,
                        "value": 1.0,
                        "threshold": 0.0,
                        "detail": "1 failed installs, 0 allowed",
                    }
                ]
            ),
            1_700_000_000_900,
            1_700_000_002_000,
            4,
        ),
    )
    conn.executemany(
        "INSERT INTO rollout_agents VALUES (?,?,?,?,?,?,?)"
        " ON CONFLICT(rollout_id, agent_id) DO UPDATE SET phase=excluded.phase,"
        " status=excluded.status, detail=excluded.detail, status_ms=excluded.status_ms",
        [
            (made.rollout_id, "edge-01", 0, old, "rolling-back", "", 1_700_000_002_000),
            (made.rollout_id, "edge-02", 1, old, "failed", "bad-signature", 1_700_000_001_900),
        ],
    )
    conn.executemany(
        "INSERT INTO rollout_events VALUES (?,?,?,?)",
        [
            (made.rollout_id, 1, 1_700_000_000_900, "created: program to 2 agents"),
            (made.rollout_id, 2, 1_700_000_002_000, "rolling back: installs failed"),
        ],
    )
    conn.execute("COMMIT")
    conn.close()
    return made
