"""The schema is migrated, never guessed: a database made by 0.1.0 upgrades with every
row kept, a fresh one gets exactly the tables the stores use, and a server refuses a
schema newer than it knows or one it was told not to upgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
import release_0_1_0
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from support.aio import Blocking
from support.server import config_values

from spikefleet.errors import ProgramInUseError
from spikefleet.program.signing import SigningKey, TrustedKeys, verify
from spikefleet_server.app import ServerApp
from spikefleet_server.cli import main
from spikefleet_server.config import load_config
from spikefleet_server.fleet.store import FleetStore
from spikefleet_server.registry import Registry
from spikefleet_server.rollouts.store import RolloutStore
from spikefleet_server.storage import (
    Database,
    SchemaError,
    current_revision,
    head_revision,
    upgrade,
)
from spikefleet_server.storage.schema import metadata
from spikefleet_server.telemetry import TelemetryStore


def test_a_database_made_by_0_1_0_upgrades_and_keeps_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = SigningKey.generate()
    made = release_0_1_0.make(tmp_path / "data", key)

    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "data")]) == 0
    assert f"schema {head_revision()} (upgraded from none)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "data")]) == 0
    assert "already current" in capsys.readouterr().out

    db = Database(tmp_path / "data" / "spikefleet.db")
    try:
        registry = Blocking(Registry(tmp_path / "data" / "programs", db, key))
        records = registry.list()
        assert {r.sha256: (r.name, r.version) for r in records} == made.programs
        assert all(
            r.labels == {"task": "nd"} and r.fidelity == {"agreement": 0.99} for r in records
        )
        old, new = list(made.programs)
        assert verify(registry.get_bytes(new), TrustedKeys([key.public_key])) == b"program two"
        assert registry.put(b"program three", name="digits").version == 3  # counter kept

        fleet = Blocking(FleetStore(db))
        telemetry = Blocking(TelemetryStore(db))
        agents = {a.agent_id: a for a in fleet.agents()}
        assert sorted(agents) == made.agents
        assert (agents["edge-01"].program_sha256, agents["edge-01"].previous_sha256) == (new, old)
        assert agents["edge-01"].inventory[0]["vendor_id"] == 0x1E7C
        assert agents["edge-02"].labels == {"site": "lab"} and agents["edge-02"].connected
        assignment = fleet.assignment("edge-01")
        assert assignment is not None and (assignment.sha256, assignment.generation) == (new, 3)
        assert fleet.assign("edge-01", new).generation == 4
        installs = fleet.installs()
        assert [(i.agent_id, i.status) for i in installs] == [
            ("edge-01", "INSTALLED"),
            ("edge-02", "FAILED"),
        ]
        assert fleet.usage(old) == ["edge-01", "edge-02"]
        for agent_id, seqs in made.telemetry.items():
            rows = telemetry.of_agent(agent_id)
            assert [r.seq for r in rows] == seqs
            assert [r.batch.frames for r in rows] == [100 * s for s in seqs]
        assert telemetry.ingest("edge-02", release_0_1_0.fleet_pb2.TelemetryBatch(seq=1)) is False
        assert telemetry.ingest("edge-02", release_0_1_0.fleet_pb2.TelemetryBatch(seq=2)) is True

        rollout = Blocking(RolloutStore(db)).get(made.rollout_id)
        assert (rollout.state, rollout.phase, rollout.phases, rollout.canary) == (
            "rolling-back",
            1,
            2,
            True,
        )
        assert rollout.spec.program_sha256 == new and rollout.spec.gates.max_error_rate == 0.01
        assert [(a.agent_id, a.status, a.detail) for a in rollout.agents] == [
            ("edge-01", "rolling-back", ""),
            ("edge-02", "failed", "bad-signature"),
        ]
        assert [e.message for e in rollout.events] == [
            "created: program to 2 agents",
            "rolling back: installs failed",
        ]
        assert rollout.gates[0].name == "installs" and rollout.version == 4
    finally:
        db.close()


def test_a_new_database_gets_exactly_the_tables_the_stores_use(tmp_path: Path) -> None:
    db = Database(tmp_path / "fresh.db")
    try:
        assert current_revision(db) is None
        assert upgrade(db) == (None, head_revision())
        with db.read() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        db.close()


def _config(data_dir: Path, **extra: object):
    return load_config(None, environ={}, overrides=config_values(data_dir, **extra))


def test_a_server_refuses_a_schema_newer_than_it_knows(tmp_path: Path) -> None:
    db = Database(tmp_path / "data" / "spikefleet.db")
    upgrade(db)
    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    db.close()
    with pytest.raises(SchemaError, match=r"revision 9999, newer than spikefleet-server") as err:
        ServerApp(_config(tmp_path / "data"))
    assert "spikefleet-server db upgrade" in str(err.value)
    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "data")]) == 1


def test_without_upgrade_at_start_an_old_schema_is_refused_naming_the_command(
    tmp_path: Path,
) -> None:
    release_0_1_0.make(tmp_path / "data", SigningKey.generate())
    with pytest.raises(SchemaError, match=r"run 'spikefleet-server db upgrade'"):
        ServerApp(_config(tmp_path / "data", db_upgrade=False))


def test_the_same_migrations_and_stores_run_on_postgresql(postgres_url: str, tmp_path: Path):
    db = Database(postgres_url)
    try:
        assert upgrade(db) == (None, head_revision())
        assert upgrade(db) == (head_revision(), head_revision())
        with db.read() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        registry = Blocking(Registry(tmp_path / "programs", db, SigningKey.generate()))
        fleet = Blocking(FleetStore(db, require_program=registry.require))
        telemetry = Blocking(TelemetryStore(db))
        registry.usage = fleet.usage_in
        first = registry.put(b"one", name="digits")
        assert registry.put(b"two", name="digits").version == 2
        assert registry.put(b"one", name="digits") == first
        fleet.register(release_0_1_0.fleet_pb2.Register(agent_id="edge-1"))
        assert [fleet.assign("edge-1", first.sha256).generation for _ in range(2)] == [1, 2]
        batches = [("edge-1", release_0_1_0.fleet_pb2.TelemetryBatch(seq=s)) for s in (1, 2, 1)]
        assert [r.new for r in telemetry.ingest_many(batches, ["edge-1"])] == [True, True, False]
        with pytest.raises(ProgramInUseError, match="edge-1"):
            registry.delete(first.sha256)
    finally:
        db.close()
