"""The control channel between real agents and a real Fleet server on loopback."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fleet_helpers import FleetServer, self_signed_loopback_cert
from sqlalchemy.engine import Connection
from support.aio import Blocking
from support.waiting import wait_for

from spikefleet.errors import ProgramNotFoundError
from spikefleet.program.signing import SigningKey
from spikefleet_agent.config import AgentConfig, InferenceConfig, ServerConfig, TelemetryConfig
from spikefleet_agent.daemon import Agent
from spikefleet_server.fleet.store import FleetStore
from spikefleet_server.registry import Registry
from spikefleet_server.storage import open_database


def test_an_agent_registers_with_its_identity(
    fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    start_agent("edge-7", site="lab", camera="dvx")
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-7"], "edge-7 to connect")
    (record,) = fleet_server.fleet.agents()
    assert record.agent_id == "edge-7"
    assert record.labels == {"site": "lab", "camera": "dvx"}
    assert record.backend == "sim"
    assert record.connected
    assert record.health == "no-program"


def test_a_stopped_agent_is_marked_disconnected(
    fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    agent = start_agent("edge-1")
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-1"], "edge-1 to connect")
    agent.stop()
    wait_for(lambda: fleet_server.fleet.connected() == [], "edge-1 to disconnect")
    record = fleet_server.fleet.store.agent("edge-1")
    assert record is not None and not record.connected


def test_telemetry_survives_a_server_outage_exactly_once_and_in_order(
    fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    agent = start_agent("edge-1")
    wait_for(lambda: agent.control is not None and agent.control.connected.is_set(), "connect")
    for _ in range(3):
        agent.collector.record_events(10)
        agent.flush_telemetry()
    wait_for(lambda: fleet_server.fleet.telemetry.last_seq("edge-1") == 3, "3 batches")

    fleet_server.stop()
    wait_for(lambda: not agent.control.connected.is_set(), "the agent to notice the outage")
    for n in range(5):
        agent.collector.record_events(100 + n)
        agent.flush_telemetry()
    assert agent.spool.depth() == 5

    fleet_server.start()  # same port, same database file
    wait_for(lambda: agent.spool.depth() == 0, "the spool to drain")
    records = fleet_server.fleet.telemetry.of_agent("edge-1")
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r.batch.events for r in records] == [10, 10, 10, 100, 101, 102, 103, 104]


def test_the_agent_dials_a_tls_server_it_trusts_and_refuses_one_it_does_not(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    cert, key = self_signed_loopback_cert()
    server = FleetServer(tmp_path / "tls.sqlite", tls=(cert, key)).start()
    (tmp_path / "ca.pem").write_bytes(cert)
    (tmp_path / "other-ca.pem").write_bytes(self_signed_loopback_cert()[0])
    agents = []
    try:
        for name, ca in (("trusting", "ca.pem"), ("doubting", "other-ca.pem")):
            config = AgentConfig(
                agent_id=name,
                state_dir=tmp_path / name,
                lock_dir=tmp_path / f"{name}-locks",
                trusted_keys=[tmp_path / "keys"],
                server=ServerConfig(
                    address=server.address, tls_ca=str(tmp_path / ca), reconnect_min_s=0.05
                ),
                inference=InferenceConfig(address="127.0.0.1:0"),
                telemetry=TelemetryConfig(interval_s=3600),
            ).validate()
            agents.append(Agent(config, pci_root=tmp_path / "none").start())
        wait_for(lambda: server.fleet.connected() == ["trusting"], "the trusting agent")
        time.sleep(0.5)  # the doubting one has had several attempts by now
        assert server.fleet.connected() == ["trusting"]
        assert server.fleet.store.agent("doubting") is None  # never got past the handshake
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def test_an_agent_reinstalled_under_the_same_id_keeps_its_telemetry_apart(
    tmp_path: Path, fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    agent = start_agent("edge-1")
    wait_for(lambda: agent.control is not None and agent.control.connected.is_set(), "connect")
    for _ in range(3):
        agent.collector.record_events(1)
        agent.flush_telemetry()
    wait_for(lambda: fleet_server.fleet.telemetry.last_seq("edge-1") == 3, "3 batches")
    agent.stop()
    shutil.rmtree(tmp_path / "edge-1")  # the host was re-imaged

    again = start_agent("edge-1")
    again.collector.record_events(50)
    again.flush_telemetry()  # spooled before it even registered
    wait_for(lambda: fleet_server.fleet.telemetry.last_seq("edge-1") == 4, "the new batch")
    records = fleet_server.fleet.telemetry.of_agent("edge-1")
    assert [(r.seq, r.batch.events) for r in records] == [(1, 1), (2, 1), (3, 1), (4, 50)]


def test_a_delete_and_an_assignment_of_the_same_program_cannot_interleave(
    tmp_path: Path, database_target: str | Path
) -> None:
    """The registry checks usage inside its delete transaction and the fleet checks
    the program inside its assignment transaction, so an assignment racing a delete
    waits for it and then finds the program gone, instead of pointing an agent at a
    program that no longer exists."""
    db = open_database(database_target)
    registry = Blocking(Registry(tmp_path / "programs", db, SigningKey.generate()))
    store = Blocking(FleetStore(db, require_program=registry.require))
    record = registry.put(b"program", name="digits")
    outcome: list[object] = []

    def assign() -> None:
        try:
            outcome.append(store.assign("edge-1", record.sha256))
        except ProgramNotFoundError as error:
            outcome.append(error)

    racer = threading.Thread(target=assign)

    def usage_while_deleting(conn: Connection, sha256: str) -> list[str]:
        racer.start()  # the assignment starts while the delete holds the write lock
        racer.join(0.5)
        assert racer.is_alive(), "the assignment did not wait for the delete"
        return store.usage_in(conn, sha256)

    registry.usage = usage_while_deleting
    registry.delete(record.sha256)
    racer.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ProgramNotFoundError)
    assert store.assignment("edge-1") is None
    with pytest.raises(ProgramNotFoundError, match="no program with sha256"):
        store.assign("edge-2", "f" * 64)
