"""The fleet inside a real ServerApp: agent streams are coroutines, not threads; they end
when the server stops; the fleet's metrics are on the server's /metrics."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from support.aio import Blocking
from support.server import serving
from support.simagents import SimAgent, start_agents
from support.waiting import wait_for

from spikefleet.client import Client
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet_server.config import hash_token, load_config
from spikefleet_server.storage import database_url

AGENT, VIEWER = "agent-token", "viewer-token"
AGENT_METADATA = (("authorization", f"Bearer {AGENT}"),)


@contextmanager
def running_app(data_dir: Path, **extra: Any) -> Iterator[Any]:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "insecure_loopback": True,
        "tokens": [
            {"name": "edge", "role": "agent", "sha256": hash_token(AGENT)},
            {"name": "ops", "role": "viewer", "sha256": hash_token(VIEWER)},
        ],
    }
    values.update(extra)
    config = load_config(None, environ={}, overrides=values)
    with serving(config) as running:
        yield Blocking(running.app, running.call)


def sim_agents(app: Any, count: int) -> list[SimAgent]:
    return start_agents(
        lambda: grpc.insecure_channel(f"127.0.0.1:{app.port}"),
        count,
        prefix="edge",
        heartbeat_s=0.2,
        telemetry_s=0.2,
        metadata=AGENT_METADATA,
    )


def test_the_server_holds_many_more_agent_streams_than_it_has_threads(
    tmp_path: Path, database_target: str | Path
) -> None:
    database = {"url": database_url(database_target)}
    with running_app(
        tmp_path / "server", grpc_threads=2, drain_seconds=5, database=database
    ) as app:
        agents = sim_agents(app, 40)
        try:
            wait_for(lambda: all(a.acked_seq >= 3 for a in agents), "telemetry acks from all")
            assert len(app.fleet.connected()) == 40
            with Client(f"127.0.0.1:{app.port}", token=VIEWER) as client:
                assert client.programs.list() == []  # unary calls still get a thread
        finally:
            for agent in agents:
                agent.stop()


def test_stop_ends_agent_streams_with_unavailable_instead_of_waiting_out_the_drain(
    tmp_path: Path,
) -> None:
    with running_app(tmp_path / "server", drain_seconds=600) as app:
        channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        register = fleet_pb2.AgentMessage(register=fleet_pb2.Register(agent_id="edge-1"))
        hold = threading.Event()

        def requests() -> Iterator[fleet_pb2.AgentMessage]:
            yield register
            hold.wait()

        stream = fleet_pb2_grpc.FleetStub(channel).Connect(requests(), metadata=AGENT_METADATA)
        assert next(stream).WhichOneof("kind") == "registered"
        stopper = threading.Thread(target=app.stop, kwargs={"grace": 600})
        stopper.start()
        try:
            next(stream)
            raise AssertionError("the stream went on after stop")
        except grpc.RpcError as ended:
            assert ended.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (ended.details() or "")
        stopper.join(120)  # bounds a hang; the drain grace is 600 s
        assert not stopper.is_alive(), "stop() waited for the agent stream"
        hold.set()
        channel.close()


def test_fleet_metrics_and_cancelled_streams_show_on_the_servers_metrics(tmp_path: Path) -> None:
    with running_app(tmp_path / "server", metrics_listen="127.0.0.1:0", drain_seconds=5) as app:
        url = f"http://127.0.0.1:{app.metrics_port}/metrics"

        def metrics() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())

        agents = sim_agents(app, 2)
        try:
            wait_for(lambda: all(a.acked_seq >= 2 for a in agents), "telemetry acks")
            text = metrics()
            assert "spikefleet_fleet_connected_agents 2.0" in text
            assert "spikefleet_fleet_telemetry_batches_total" in text
            assert "spikefleet_fleet_telemetry_queue" in text
        finally:
            for agent in agents:
                agent.stop()  # cancels its Connect call
        connect = 'code="CANCELLED",method="/spikefleet.v1.Fleet/Connect"'
        wait_for(lambda: connect in metrics(), "cancelled Connect calls counted")
        wait_for(lambda: "spikefleet_fleet_connected_agents 0.0" in metrics(), "agents gone")


BOUND = "edge-07-token"


def connect_as(app: Any, agent_id: str, token: str) -> grpc.RpcError | str:
    """Register ``agent_id`` with ``token``: the first server message's kind, or the error."""
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        register = fleet_pb2.AgentMessage(register=fleet_pb2.Register(agent_id=agent_id))
        stream = fleet_pb2_grpc.FleetStub(channel).Connect(
            iter([register]), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
        try:
            kind = next(stream).WhichOneof("kind")
        except grpc.RpcError as error:
            return error
        stream.cancel()
        return kind or ""


def test_an_agent_token_bound_to_ids_registers_only_as_those_agents(tmp_path: Path) -> None:
    tokens = [
        {"name": "edge", "role": "agent", "sha256": hash_token(AGENT)},
        {"name": "edge-07", "role": "agent", "sha256": hash_token(BOUND), "agents": ["edge-07"]},
    ]
    with running_app(tmp_path / "server", tokens=tokens, drain_seconds=5) as app:
        assert connect_as(app, "edge-07", BOUND) == "registered"
        refused = connect_as(app, "edge-08", BOUND)
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may register only as edge-07, not 'edge-08'" in (refused.details() or "")
        assert "edge-08" not in [a.agent_id for a in app.fleet.store.agents()]
        assert connect_as(app, "edge-08", AGENT) == "registered"  # an unbound token: any id
