"""Every table of the server, as the newest migration leaves them.

The stores build their statements from these objects. A change here needs a new
migration in :mod:`spikefleet_server.storage.migrations` (a test compares the two).
Timestamps are milliseconds since the epoch (BIGINT); labels, fidelity, inventory,
specs and gate results are JSON text; flags are booleans (0/1 on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Millis = sa.BigInteger
_ROWID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY on SQLite

# -- registry ---------------------------------------------------------------------------

programs = sa.Table(
    "programs",
    metadata,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("fidelity", sa.Text, nullable=False),
    sa.Column("created_unix_ms", Millis, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("source_sha256", sa.Text, nullable=False),
    sa.UniqueConstraint("name", "version"),
)

# The signed program bytes on PostgreSQL (replicas share no disk); empty on SQLite.
program_blobs = sa.Table(
    "program_blobs",
    metadata,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

program_versions = sa.Table(
    "program_versions",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("last_version", sa.Integer, nullable=False),
)

# -- fleet ------------------------------------------------------------------------------

fleet_agents = sa.Table(
    "fleet_agents",
    metadata,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("inventory", sa.Text, nullable=False),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("program_sha256", sa.Text, nullable=False),
    sa.Column("previous_sha256", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("health", sa.Text, nullable=False),
    sa.Column("connected", sa.Boolean, nullable=False),
    sa.Column("shadow_sha256", sa.Text, nullable=False, server_default=""),
    sa.Column("first_seen_ms", Millis, nullable=False),
    sa.Column("last_seen_ms", Millis, nullable=False),
    # the replica holding its control stream (0: a lone server); see replicas.Liveness
    sa.Column("replica_id", sa.BigInteger, nullable=False, server_default="0"),
)

fleet_assignments = sa.Table(
    "fleet_assignments",
    metadata,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("shadow_sha256", sa.Text, nullable=False),
    sa.Column("rollback", sa.Boolean, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", Millis, nullable=False),
)

fleet_installs = sa.Table(
    "fleet_installs",
    metadata,
    sa.Column("id", _ROWID, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("at_ms", Millis, nullable=False),
    sa.Index("fleet_installs_agent", "agent_id", "id"),
    sqlite_autoincrement=True,
)

# -- telemetry --------------------------------------------------------------------------

fleet_telemetry = sa.Table(
    "fleet_telemetry",
    metadata,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("received_ms", Millis, nullable=False),
    sa.Column("start_ms", Millis, nullable=False),
    sa.Column("end_ms", Millis, nullable=False),
    sa.Column("program_sha256", sa.Text, nullable=False),
    sa.Column("frames", sa.BigInteger, nullable=False),
    sa.Column("predictions", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("latency_p99_ms", sa.Float, nullable=False),
    sa.Column("shadow_sha256", sa.Text, nullable=False),
    sa.Column("shadow_frames", sa.BigInteger, nullable=False),
    sa.Column("shadow_agreements", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("fleet_telemetry_received", "received_ms"),
)

# -- rollouts ---------------------------------------------------------------------------

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("rollout_id", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("phase", sa.Integer, nullable=False),
    sa.Column("phases", sa.Integer, nullable=False),
    sa.Column("canary", sa.Boolean, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("stage_started_ms", Millis, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("gates", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_ms", Millis, nullable=False),
    sa.Column("updated_ms", Millis, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Index("rollouts_state", "state"),
)

rollout_agents = sa.Table(
    "rollout_agents",
    metadata,
    sa.Column("rollout_id", sa.Text, sa.ForeignKey("rollouts.rollout_id"), primary_key=True),
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("phase", sa.Integer, nullable=False),
    sa.Column("from_sha256", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("status_ms", Millis, nullable=False, server_default="0"),
)

rollout_events = sa.Table(
    "rollout_events",
    metadata,
    sa.Column("rollout_id", sa.Text, sa.ForeignKey("rollouts.rollout_id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("unix_ms", Millis, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)
