"""Hostile and unlucky control streams against a real Fleet server on loopback.

An impersonator, a flood or a broken agent must never cut a real agent off, lose
other agents' telemetry, or leave records that say "connected" for nobody.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from fleet_helpers import FleetServer
from support.agent import make_program, signed_program
from support.raw_agent import RawAgent
from support.waiting import wait_for

from spikefleet.program.signing import SigningKey
from spikefleet.v1 import fleet_pb2
from spikefleet_agent.daemon import Agent
from spikefleet_server.fleet import TelemetryLimits


def server_seqs(server: FleetServer, agent_id: str) -> list[int]:
    return [r.seq for r in server.fleet.telemetry.of_agent(agent_id)]


def test_a_forged_seq_at_the_top_of_the_range_never_cuts_the_real_agent_off(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    with RawAgent(fleet_server.address, "edge-1") as impostor:
        impostor.registered()
        impostor.telemetry(seq=2**63 - 1, frames=1)
        (ack,) = impostor.wait_acks(1)
        assert not ack.refused  # storable: the server cannot tell it is forged
    wait_for(lambda: fleet_server.fleet.connected() == [], "the impostor to leave")

    agent = start_agent("edge-1")
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-1"], "the real agent to register")
    for events in (10, 20):
        agent.collector.record_events(events)
        agent.flush_telemetry()
    wait_for(lambda: agent.spool.depth() == 0, "the real agent's telemetry to be acked")
    stored = {r.seq: r.batch.events for r in fleet_server.fleet.telemetry.of_agent("edge-1")}
    assert stored == {1: 10, 2: 20, 2**63 - 1: 0}

    program = make_program(3)
    sha, data = signed_program(program, signing_key)
    fleet_server.programs[sha] = data
    fleet_server.fleet.assign("edge-1", sha)
    wait_for(
        lambda: [r.status for r in fleet_server.fleet.store.installs("edge-1")] == ["INSTALLED"],
        "the real agent to install and report",
    )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"seq": 2**64 - 1}, "seq"),
        ({"seq": 1, "frames": 2**63}, "frames"),
        ({"seq": 1, "class_histogram": [1, 2**64 - 1]}, "class_histogram[1]"),
        ({"seq": 1, "error_kinds": {"x": 2**63}}, "error_kinds"),
        ({"seq": 1, "latency_p99_ms": float("nan")}, "latency_p99_ms"),
        ({"seq": 0}, "seq"),
        ({"seq": 1, "program_sha256": "not-a-sha"}, "program_sha256"),
    ],
)
def test_a_batch_the_database_cannot_hold_is_refused_by_name_and_stores_nothing(
    fleet_server: FleetServer, fields: dict[str, object], named: str
) -> None:
    with RawAgent(fleet_server.address, "mallory") as raw:
        raw.registered()
        raw.telemetry(**fields)
        raw.telemetry(seq=5, frames=7)  # the stream goes on: a refusal is per batch
        first, second = raw.wait_acks(2)
    assert named in first.refused
    assert not second.refused and second.seq == 5
    assert server_seqs(fleet_server, "mallory") == [5]


def test_poisoned_batches_from_one_agent_never_lose_another_agents_telemetry(
    fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    agents = [start_agent(f"edge-{i}") for i in range(3)]
    wait_for(lambda: len(fleet_server.fleet.connected()) == 3, "three agents")
    with RawAgent(fleet_server.address, "mallory") as raw:
        raw.registered()
        for round_ in range(15):
            raw.telemetry(seq=round_ + 1, frames=2**63 + round_)  # in the same groups
            for agent in agents:
                agent.collector.record_events(round_ + 1)
                agent.flush_telemetry()
        acks = raw.wait_acks(15)
    assert all("frames" in ack.refused for ack in acks)
    for i, agent in enumerate(agents):
        wait_for(lambda agent=agent: agent.spool.depth() == 0, f"edge-{i}'s spool to drain")
        records = fleet_server.fleet.telemetry.of_agent(f"edge-{i}")
        assert [(r.seq, r.batch.events) for r in records] == [(n, n) for n in range(1, 16)]
    assert server_seqs(fleet_server, "mallory") == []


def test_telemetry_is_acked_only_once_the_database_takes_it_again(tmp_path: Path) -> None:
    """A commit that fails (the database locked or full) is retried in order: no later ack
    can cover a batch that is not stored, so the agent's spool never loses it. (SQLite:
    its busy timeout makes the commit fail; PostgreSQL's lock waits do not.)"""
    fleet_server = FleetServer(tmp_path / "s.sqlite").start()
    blocker = sqlite3.connect(fleet_server.db, isolation_level=None, timeout=30)
    try:
        with RawAgent(fleet_server.address, "edge-1") as raw:
            raw.registered()
            blocker.execute("BEGIN EXCLUSIVE")  # the writer's BEGIN IMMEDIATE fails after 10 s
            try:
                raw.telemetry(seq=1, frames=1)
                time.sleep(11)  # past the busy timeout: the group commit fails at least once
                raw.telemetry(seq=2, frames=2)
                assert raw.acks() == []
            finally:
                blocker.execute("ROLLBACK")
            acks = raw.wait_acks(2)
        assert [a.seq for a in acks] == [1, 2]
        assert server_seqs(fleet_server, "edge-1") == [1, 2]
    finally:
        blocker.close()
        fleet_server.stop()


def test_an_agent_whose_stream_drops_mid_register_is_not_left_connected(
    fleet_server: FleetServer,
) -> None:
    """The Register write is slow (another writer holds the database) and the callers give
    up before it lands, so the "disconnected" write races it. Their records must end up
    disconnected, not "connected" for nobody, forever."""
    service = fleet_server.fleet
    flaky = [f"flaky-{round_}-{i}" for round_ in range(4) for i in range(2)]
    for round_ in range(4):
        raws: list[RawAgent] = []
        with fleet_server.writes_held():
            try:
                raws = [RawAgent(fleet_server.address, f"flaky-{round_}-{i}") for i in range(2)]
                wait_for(lambda: len(service._sessions) == 2, "both sessions to open")
                for raw in raws:
                    raw.call.cancel()
                wait_for(lambda: len(service._sessions) == 0, "both sessions to end")
                time.sleep(0.3)  # let the "disconnected" writes queue for the lock too
            finally:
                for raw in raws:
                    raw.close()

    async def queued_writes_landed() -> None:
        # an agent's register and disconnect writes hold its lock in turn (FIFO): once
        # the lock is ours, both have landed
        for agent_id in flaky:
            async with fleet_server.service._write_lock(agent_id):  # type: ignore[union-attr]
                pass

    fleet_server.run(queued_writes_landed())
    assert [r.agent_id for r in service.store.agents() if r.connected] == []


def test_a_batch_over_the_size_limit_is_refused_naming_the_setting(tmp_path: Path) -> None:
    server = FleetServer(tmp_path / "s.sqlite", limits=TelemetryLimits(max_batch_bytes=4096))
    server.start()
    try:
        with RawAgent(server.address, "flood") as raw:
            raw.registered()
            raw.telemetry(seq=1, backend="x" * 200, spike_rates={f"l{i}": 1.0 for i in range(400)})
            raw.telemetry(seq=2, frames=1)
            big, small = raw.wait_acks(2)
        assert "telemetry_max_batch_bytes (4096)" in big.refused
        assert not small.refused
        assert server_seqs(server, "flood") == [2]
    finally:
        server.stop()


def test_one_agent_is_held_to_its_telemetry_rate(tmp_path: Path) -> None:
    limits = TelemetryLimits(max_batch_bytes=64_000, rate_bytes_per_s=100_000)
    server = FleetServer(tmp_path / "s.sqlite", limits=limits).start()
    try:
        with RawAgent(server.address, "flood") as raw:
            raw.registered()
            start = time.monotonic()
            count = 30  # 1.8 MB: the burst (1.6 MB) and then about 2 s at the rate
            for seq in range(1, count + 1):
                raw.telemetry(
                    seq=seq,
                    backend="x" * 200,
                    spike_rates={"l": 1.0},
                    inventory=[fleet_pb2.Device(description="d" * 59_000)],
                )
            acks = raw.wait_acks(count)
            elapsed = time.monotonic() - start
        assert not any(a.refused for a in acks)
        sent = count * 59_300
        assert elapsed >= (sent - limits.burst_bytes - 64_000) / limits.rate_bytes_per_s
    finally:
        server.stop()


def test_telemetry_beyond_retention_is_pruned(database_target: str | Path) -> None:
    limits = TelemetryLimits(retention_days=0, max_batches_per_agent=5)
    server = FleetServer(database_target, limits=limits, prune_interval_s=0.2).start()
    try:
        with RawAgent(server.address, "edge-1") as raw:
            raw.registered()
            for seq in range(1, 13):
                raw.telemetry(seq=seq, frames=seq)
            raw.wait_acks(12)
        wait_for(lambda: server_seqs(server, "edge-1") == [8, 9, 10, 11, 12], "the newest 5")
    finally:
        server.stop()

    aged = FleetServer(
        database_target, limits=TelemetryLimits(retention_days=1e-6), prune_interval_s=0.2
    ).start()  # 86 ms of retention
    try:
        wait_for(lambda: server_seqs(aged, "edge-1") == [], "batches older than retention")
    finally:
        aged.stop()


def test_a_deleted_agent_is_gone_and_a_connected_one_needs_force(
    fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    from spikefleet_server.fleet.service import AgentConnectedError

    agent = start_agent("edge-1")
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-1"], "connect")
    agent.collector.record_events(1)
    agent.flush_telemetry()
    wait_for(lambda: agent.spool.depth() == 0, "telemetry")
    with pytest.raises(AgentConnectedError):
        fleet_server.fleet.delete_agent("edge-1")
    agent.stop()
    wait_for(lambda: fleet_server.fleet.connected() == [], "disconnect")
    assert fleet_server.fleet.delete_agent("edge-1") == (False, 1, 0)
    assert fleet_server.fleet.store.agent("edge-1") is None
    assert server_seqs(fleet_server, "edge-1") == []
    assert fleet_server.fleet.delete_agent("edge-1") is None


def test_register_with_fields_out_of_range_is_invalid_argument(fleet_server: FleetServer) -> None:
    raw = RawAgent(fleet_server.address, "x" * 500)
    raw.ended.wait(10)
    assert raw.error is not None and raw.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "agent_id" in (raw.error.details() or "")
    raw.close()
    with RawAgent(fleet_server.address, "edge-1") as raw:
        raw.registered()
        report = fleet_pb2.InstallReport(sha256="a" * 64, generation=2**64 - 1)
        raw.send(fleet_pb2.AgentMessage(install=report))
        raw.ended.wait(10)
        assert raw.error is not None and raw.error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "generation" in (raw.error.details() or "")
    assert fleet_server.fleet.store.installs("edge-1") == []
