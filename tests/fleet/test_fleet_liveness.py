"""Telemetry as proof of life: a server that says so in Registered takes every telemetry
batch as an unchanged heartbeat (last_seen moves), and the agent's real control channel
then sends no unchanged heartbeat while its batches flow. A changed state still goes at
once, an agent with no telemetry keeps heartbeating, and against a server that does not
say so (an older one) the agent heartbeats every period as before."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from fleet_helpers import FleetServer
from support.waiting import wait_for

from spikefleet.v1 import fleet_pb2
from spikefleet_agent.control.channel import ControlChannel
from spikefleet_agent.telemetry.spool import Spool
from spikefleet_server.fleet import service as service_module
from spikefleet_server.fleet.store import AgentRecord

SHA = "a" * 64
PERIOD_MS = 300  # the heartbeat period the server gives its agents here


@pytest.fixture
def every_refresh_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """last_seen written on every proof of life, not at most every 30 s."""
    monkeypatch.setattr(service_module, "LAST_SEEN_WRITE_S", 0.0)


@contextmanager
def serving(database_target: str | Path, *, telemetry_counts: bool = True) -> Iterator[FleetServer]:
    server = FleetServer(
        database_target,
        heartbeat_interval_ms=PERIOD_MS,
        telemetry_counts_as_heartbeat=telemetry_counts,
    ).start()
    try:
        yield server
    finally:
        server.stop()


class Edge:
    """The agent's ControlChannel with a real spool; ``health`` is what it reports, and
    :meth:`feeding` keeps telemetry flowing (a batch every 20 ms) while its block runs."""

    def __init__(self, address: str, tmp_path: Path) -> None:
        self.health = "ok"
        self.spool = Spool(tmp_path / "spool.sqlite")
        self.channel = ControlChannel(
            address,
            register=lambda: fleet_pb2.Register(agent_id="edge-1", program_sha256=SHA),
            heartbeat=lambda: fleet_pb2.Heartbeat(
                unix_ms=int(time.time() * 1000), program_sha256=SHA, health=self.health
            ),
            on_assignment=lambda assignment: None,
            spool=self.spool,
            heartbeat_interval_s=PERIOD_MS / 1000,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
        )

    def batch(self) -> int:
        now = int(time.time() * 1000)
        seq = self.spool.append(
            fleet_pb2.TelemetryBatch(
                start_unix_ms=now - 20, end_unix_ms=now, program_sha256=SHA, backend="sim"
            )
        )
        self.channel.wake()
        return seq

    @contextmanager
    def feeding(self) -> Iterator[None]:
        stop = threading.Event()

        def feed() -> None:
            while not stop.wait(0.02):
                self.batch()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            yield
        finally:
            stop.set()
            feeder.join(10)

    def acked(self, seq: int) -> bool:
        return not any(b.seq <= seq for b in self.spool.pending(0, 1))


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[list[Edge]]:
    made: list[Edge] = []
    yield made
    for edge in made:
        edge.channel.stop()
        edge.spool.close()


@contextmanager
def registered_edge(
    server: FleetServer, tmp_path: Path, edges: list[Edge], *, feeding: bool = True
) -> Iterator[Edge]:
    """An edge started against ``server`` and registered, its telemetry flowing (when
    ``feeding``) until the block ends."""
    edge = Edge(server.address, tmp_path)
    edges.append(edge)
    with edge.feeding() if feeding else nullcontext():
        edge.channel.start()
        wait_for(edge.channel.connected.is_set, "the agent to register")
        yield edge


def heartbeats(server: FleetServer) -> float:
    """Heartbeats the server received (its spikefleet_fleet_heartbeats_total)."""
    assert server.service is not None
    (metric,) = server.service.metrics.heartbeats.collect()
    return next(s.value for s in metric.samples if s.name.endswith("_total"))


def agent(server: FleetServer) -> AgentRecord:
    (record,) = server.fleet.agents()
    return record


def periods(count: int) -> None:
    """Let ``count`` heartbeat periods pass (how long the agent is watched, not a goal)."""
    time.sleep(count * PERIOD_MS / 1000)


def test_no_unchanged_heartbeat_while_batches_flow_and_last_seen_still_moves(
    database_target: str | Path, tmp_path: Path, edges: list[Edge], every_refresh_written: None
) -> None:
    with serving(database_target) as server:
        with registered_edge(server, tmp_path, edges) as edge:
            # a batch acked after the first heartbeat: its last_seen refresh is committed
            wait_for(lambda: edge.acked(1), "the first batch's ack")
            since = int(time.time() * 1000)
            periods(6)
            last = edge.batch()
            wait_for(lambda: edge.acked(last), "the last batch's ack")
            received = heartbeats(server)
        record = agent(server)
    assert received == 1  # the first on the stream, then none: the batches said it
    assert record.last_seen_ms >= since  # moved by batches alone
    assert record.health == "ok" and record.connected


def test_an_agent_with_no_telemetry_to_send_keeps_heartbeating(
    database_target: str | Path, tmp_path: Path, edges: list[Edge], every_refresh_written: None
) -> None:
    with (
        serving(database_target) as server,
        registered_edge(server, tmp_path, edges, feeding=False),
    ):
        first = agent(server).last_seen_ms
        wait_for(lambda: heartbeats(server) >= 4, "heartbeats every period")
        wait_for(lambda: agent(server).last_seen_ms > first, "last_seen to move")


def test_a_changed_state_is_sent_while_batches_flow(
    database_target: str | Path, tmp_path: Path, edges: list[Edge]
) -> None:
    with serving(database_target) as server, registered_edge(server, tmp_path, edges) as edge:
        wait_for(lambda: edge.acked(1), "the first batch's ack")
        periods(2)
        edge.health = "degraded"
        wait_for(lambda: agent(server).health == "degraded", "the new health at the server")
        periods(3)
        received = heartbeats(server)
    assert received == 2  # the first, then the change only


def test_against_a_server_that_does_not_say_so_the_agent_heartbeats_every_period(
    database_target: str | Path, tmp_path: Path, edges: list[Edge]
) -> None:
    with (
        serving(database_target, telemetry_counts=False) as server,
        registered_edge(server, tmp_path, edges) as edge,
    ):
        wait_for(lambda: heartbeats(server) >= 4, "heartbeats beside the batches")
        last = edge.batch()
        wait_for(lambda: edge.acked(last), "the batches' acks")
