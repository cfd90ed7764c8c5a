"""An agent whose token the server refuses for its agent id says why and stops redialling
at the fast pace (a real gRPC server on loopback that refuses, as the fleet server does
when a token is bound to another agent id)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs
from support.waiting import wait_for

from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet_agent.control.channel import ControlChannel
from spikefleet_agent.telemetry.spool import Spool


class BoundTokens(fleet_pb2_grpc.FleetServicer):
    """Accepts only ``edge-1``'s token for agent id ``edge-1``."""

    def Connect(
        self, request_iterator: Iterator[fleet_pb2.AgentMessage], context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.ServerMessage]:
        first = next(request_iterator)
        if first.register.agent_id != "edge-1":
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token belongs to agent edge-1, not {first.register.agent_id}",
            )
        yield fleet_pb2.ServerMessage(registered=fleet_pb2.Registered())


@pytest.fixture
def server_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    fleet_pb2_grpc.add_FleetServicer_to_server(BoundTokens(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def channel_for(agent_id: str, address: str, tmp_path: Path) -> ControlChannel:
    return ControlChannel(
        address,
        register=lambda: fleet_pb2.Register(agent_id=agent_id),
        heartbeat=fleet_pb2.Heartbeat,
        on_assignment=lambda assignment: None,
        spool=Spool(tmp_path / f"{agent_id}.sqlite", 100),
        token="t",
        reconnect_min_s=0.05,
        reconnect_max_s=30.0,
    )


def test_a_refused_identity_is_logged_with_the_fix_and_redialled_at_the_cap(
    server_address: str, tmp_path: Path
) -> None:
    channel = channel_for("edge-2", server_address, tmp_path)
    with capture_logs() as logs:
        channel.start()
        wait_for(lambda: channel.retry_delay_s > 0, "a redial to be scheduled", 20)
        channel.stop()
    refused = [e for e in logs if e["event"] == "control.refused"]
    assert refused and refused[0]["code"] == "PERMISSION_DENIED"
    assert refused[0]["agent_id"] == "edge-2" and "token_file" in refused[0]["hint"]
    assert "belongs to agent edge-1" in channel.refusal
    assert channel.retry_delay_s >= 15.0  # the jittered cap, not the 0.05 s first step
    assert not channel.connected.is_set()


def test_the_agent_the_token_belongs_to_registers(server_address: str, tmp_path: Path) -> None:
    channel = channel_for("edge-1", server_address, tmp_path)
    channel.start()
    wait_for(channel.connected.is_set, "the channel to connect", 20)
    registered = channel.connected.is_set()
    channel.stop()
    assert registered and channel.refusal == ""
