"""Two replicas on one PostgreSQL: the rollout leader is driven by events alone.

A rollout created through the replica that does not lead, for agents connected
only to that replica, completes although the leader never wakes by itself (its
safety-net sleep is made an hour, the install timeout ten minutes): the request
and an install reported long after the leader's last step reach it as NOTIFYs,
and the bake ends on its own timer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rollout_helpers import Agents, Server, final
from support.backends import postgres_database
from support.postgres import PostgresCluster
from support.server import put_programs, running_app
from support.waiting import wait_for

from spikefleet.client.rollouts import RolloutRequest
from spikefleet_server.rollouts import controller

NO_SAFETY_NET_S = 3600.0


def test_a_rollout_through_the_replica_that_does_not_lead_advances_on_events_alone(
    tmp_path: Path,
    postgres_cluster: PostgresCluster,
    agents: Agents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(controller, "MAX_SLEEP_S", NO_SAFETY_NET_S)
    url = postgres_database(postgres_cluster)
    with running_app(tmp_path / "a", url) as leader, running_app(tmp_path / "b", url) as other:
        assert leader.coordination.is_leader() and not other.coordination.is_leader()
        leader.rollouts._max_sleep_s = NO_SAFETY_NET_S
        server = Server(other.port, put_programs(leader, {"old": 1, "new": 2}))
        fleet = agents.start(server, 2)  # their streams are on the replica that doesn't lead
        client = server.client()
        late = fleet[1]
        late.stop()
        wait_for(
            lambda: [a.connected for a in client.agents()] == [True, False],
            "the late agent to be recorded away",
        )

        rollout_id = client.create(
            RolloutRequest(
                program_sha256=server.new, waves=(100.0,), bake_s=0.2, install_timeout_s=600.0
            )
        ).rollout_id
        wait_for(
            lambda: (
                [a.status for a in client.get(rollout_id).agents] == ["installed", "installing"]
            ),
            "the connected agent to install while the late one is away",
        )
        late.start()  # registers at the other replica, installs, reports there
        done = final(client, rollout_id)

        assert done.state == "succeeded", done.events
        assert all(a.active == server.new for a in fleet)
        assert leader.fleet.connected() == []  # every report came through the other
        agents.stop()
