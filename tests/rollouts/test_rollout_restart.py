"""A server killed with -9 in the middle of a rollout carries on where it was."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from rollout_helpers import AGENT_METADATA, client, final
from rollout_processes import free_port, start_server
from support.server import put_programs, running_app
from support.simagents import Behaviour, SimAgent
from support.waiting import wait_for

from spikefleet.client.rollouts import RolloutRequest, RolloutsClient
from spikefleet.errors import ServerUnavailableError


def reachable(rollouts: RolloutsClient, rollout_id: str) -> bool:
    """gRPC keeps the refused connection in backoff for a while: poll until it answers."""
    try:
        rollouts.get(rollout_id)
    except ServerUnavailableError:
        return False
    return True


@pytest.mark.slow
def test_a_server_killed_mid_wave_resumes_the_rollout_from_its_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    with running_app(data_dir) as app:
        programs = put_programs(app, {"old": 1, "new": 2})
    port = free_port()
    server = start_server(tmp_path, data_dir, port)
    fleet = [
        SimAgent(
            grpc.insecure_channel(f"127.0.0.1:{port}"),
            f"edge-{i:02d}",
            labels={"site": "lab"},
            program_sha256=programs["old"],
            behaviour=Behaviour(frames_per_batch=20),
            heartbeat_s=0.1,
            telemetry_s=0.1,
            metadata=AGENT_METADATA,
        ).start()
        for i in range(10)
    ]
    try:
        for agent in fleet:
            assert agent.registered.wait(30)
        rollouts = client(port)
        request = RolloutRequest(
            program_sha256=programs["new"],
            canary_count=2,
            waves=(50.0, 100.0),
            bake_s=2.0,
            min_agreement=0.9,
        )
        rollout_id = rollouts.create(request).rollout_id
        wait_for(
            lambda: (lambda r: r.phase == 1 and r.stage == "bake")(rollouts.get(rollout_id)),
            "wave 1 to install and start baking",
        )
        before = rollouts.get(rollout_id)
        server.kill9()
        wait_for(lambda: not any(a.registered.is_set() for a in fleet), "agents to lose the server")

        server = start_server(tmp_path, data_dir, port)
        wait_for(lambda: reachable(rollouts, rollout_id), "the restarted server to answer")
        done = final(rollouts, rollout_id)

        assert done.state == "succeeded", done.events
        assert done.version > before.version
        assert all(a.active == programs["new"] for a in fleet)
        messages = [m for _, m in done.events]
        assert sum(m.startswith("created") for m in messages) == 1
        assert sum(m.startswith("canary shadow passed") for m in messages) == 1
        assert sum(m.startswith("wave 1: installed on 3/3") for m in messages) == 1
        assert sum(m.startswith("wave 2 passed its gates") for m in messages) == 1
        # every agent switched program exactly once; after reconnecting, the desired state
        # the server re-sends is answered "already active"
        for agent in fleet:
            switches = [r.sha256 for r in agent.installs if r.status == 1 and r.detail != "active"]
            assert switches == [programs["new"]]
    finally:
        for agent in fleet:
            agent.stop()
        server.stop()
