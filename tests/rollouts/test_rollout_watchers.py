"""Watching rollouts costs the server no thread: many open WatchRollout streams from a
viewer leave every other call served (issue 14: 16 watchers used to hold all 16 threads)."""

from __future__ import annotations

from rollout_helpers import Agents, Server
from support.server import TOKENS

from spikefleet.client import Client
from spikefleet.client.rollouts import RolloutRequest

WATCHERS = 48  # well over the server's storage threads (4 in this fixture, 16 by default)


def test_many_open_watch_streams_leave_other_calls_served(server: Server, agents: Agents) -> None:
    agents.start(server, 2)
    deployer = server.client()
    created = deployer.create(
        RolloutRequest(program_sha256=server.new, canary_percent=50, bake_s=600.0)
    )
    deployer.pause(created.rollout_id, "held open while the viewers watch")

    with Client(server.address, token=TOKENS["viewer"], timeout=None) as viewer:
        streams = [viewer.rollouts.watch(created.rollout_id) for _ in range(WATCHERS)]
        first = [next(stream) for stream in streams]  # every stream is open and answered
        assert {status.rollout_id for status in first} == {created.rollout_id}

        with Client(server.address, token=TOKENS["viewer"], timeout=10.0) as other:
            assert [p.name for p in other.programs.list()]
            assert len(other.agents()) == 2
            assert other.rollouts.get(created.rollout_id).state == "paused"

        for stream in streams:
            stream.close()
    deployer.abort(created.rollout_id)
