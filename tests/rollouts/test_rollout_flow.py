"""Rollouts end to end: a real fleet server on loopback, agents speaking the control protocol."""

from __future__ import annotations

import pytest
from rollout_helpers import Agents, Server, final
from support.simagents import Behaviour
from support.waiting import wait_for

from spikefleet.client.rollouts import RolloutRequest
from spikefleet.errors import AuthError


def test_a_good_program_goes_canary_then_waves_to_every_selected_agent(
    server: Server, agents: Agents
) -> None:
    lab = agents.start(server, 12, prefix="lab")
    other = agents.start(server, 2, prefix="other", labels={"site": "other"})
    client = server.client()

    created = client.create(
        RolloutRequest(
            program_sha256=server.new,
            selector={"site": "lab"},
            canary_percent=10,
            waves=(50.0, 100.0),
            bake_s=0.3,
            min_agreement=0.95,
            max_error_rate=0.01,
            max_p99_ms=50,
        )
    )
    assert created.phases == 3
    assert created.counts(0) in ({"shadowing": 2}, {"pending": 2})
    assert sum(created.counts(1).values()) == 4  # 50% of 12 minus the canary
    assert sum(created.counts(2).values()) == 6

    done = final(client, created.rollout_id)

    assert done.state == "succeeded", done.events
    assert done.counts() == {"installed": 12}
    assert all(a.active == server.new and a.shadow == "" for a in lab)
    assert all(a.active == server.old and not a.installs for a in other)
    messages = [m for _, m in done.events]
    assert any(m.startswith("canary shadow passed: agreement 1") for m in messages)
    assert any(m.startswith("wave 2 passed its gates") for m in messages)
    # the canary ran the candidate in shadow before any agent installed it
    canary = {a.agent_id for a in done.agents if a.phase == 0}
    assert {a.agent_id for a in lab if a.installs and a.installs[0].sha256 == server.new} == {
        a.agent_id for a in lab
    }
    assert len(canary) == 2


def test_low_shadow_agreement_stops_at_the_canary_and_nothing_else_is_touched(
    server: Server, agents: Agents
) -> None:
    fleet = agents.start(
        server, 10, behaviour=Behaviour(frames_per_batch=50, agreement={server.bad: 0.6})
    )
    client = server.client()

    rollout = client.create(
        RolloutRequest(
            program_sha256=server.bad,
            canary_count=2,
            waves=(100.0,),
            bake_s=0.3,
            min_agreement=0.98,
        )
    )
    canary = {a.agent_id for a in rollout.agents if a.phase == 0}
    done = final(client, rollout.rollout_id)

    assert done.state == "rolled-back"
    assert "agreement 0.6" in done.reason and "limit 0.98" in done.reason
    assert [g.name for g in done.gates if not g.passed] == ["agreement"]
    for agent in fleet:
        assert agent.active == server.old
        assert agent.shadow == ""
        assert not agent.installs  # the candidate was never installed anywhere
    assert {a.agent_id for a in done.agents if a.status == "rolled-back"} == canary
    assert {a.status for a in done.agents if a.agent_id not in canary} == {"pending"}


def test_a_canary_that_fails_its_error_gate_is_rolled_back_to_the_previous_program(
    server: Server, agents: Agents
) -> None:
    fleet = agents.start(
        server, 10, behaviour=Behaviour(frames_per_batch=50, error_rate={server.bad: 0.2})
    )
    client = server.client()

    rollout = client.create(
        RolloutRequest(
            program_sha256=server.bad,
            canary_count=3,
            waves=(100.0,),
            bake_s=0.3,
            max_error_rate=0.05,
        )
    )
    canary = {a.agent_id for a in rollout.agents if a.phase == 0}
    done = final(client, rollout.rollout_id)

    assert done.state == "rolled-back"
    assert done.reason.startswith("canary failed error-rate 0.1667 (limit 0.05)")  # 20 per 120
    by_id = {a.agent_id: a for a in fleet}
    for agent_id in canary:
        statuses = [r.status for r in by_id[agent_id].installs]
        assert statuses == [1, 4]  # INSTALLED, then ROLLED_BACK
        assert by_id[agent_id].active == server.old
    for agent_id in by_id.keys() - canary:
        assert by_id[agent_id].active == server.old and not by_id[agent_id].installs
    wait_for(
        lambda: all(a.program_sha256 == server.old for a in client.agents()),
        "the fleet view to show every agent back on the old program",
    )


def test_failed_installs_beyond_the_allowance_roll_back_everything_touched(
    server: Server, agents: Agents
) -> None:
    fleet = agents.start(server, 6, behaviour=Behaviour(frames_per_batch=10))
    fleet[5].behaviour = Behaviour(frames_per_batch=10, fail_installs={server.new})
    client = server.client()

    done = final(
        client,
        client.create(
            RolloutRequest(
                program_sha256=server.new, canary_count=1, waves=(50.0, 100.0), bake_s=0.2
            )
        ).rollout_id,
    )

    assert done.state == "rolled-back"
    assert "installs failed on edge-05 (failed: load)" in done.reason
    assert all(a.active == server.old for a in fleet)
    assert {a.status for a in done.agents} == {"rolled-back"}


def test_an_agent_that_disconnects_mid_rollout_is_marked_offline_and_installs_on_return(
    server: Server, agents: Agents
) -> None:
    fleet = agents.start(server, 10)
    client = server.client()
    # The timeout decides FAILED (connected, not installed) or OFFLINE (away): long enough
    # for a connected agent on a loaded machine to install, short enough for the leaver.
    rollout = client.create(
        RolloutRequest(
            program_sha256=server.new, waves=(50.0, 100.0), bake_s=1.0, install_timeout_s=5.0
        )
    )
    second_wave = [a.agent_id for a in rollout.agents if a.phase == 1]
    leaver = next(a for a in fleet if a.agent_id == second_wave[0])
    leaver.stop()
    wait_for(
        lambda: not next(a for a in client.agents() if a.agent_id == leaver.agent_id).connected,
        "the server to record the leaver as disconnected",
    )

    done = final(client, rollout.rollout_id)

    assert done.state == "succeeded"
    assert done.reason == "installed on 9/10 agents"
    status = {a.agent_id: a for a in done.agents}[leaver.agent_id]
    assert status.status == "offline"
    assert leaver.active == server.old

    leaver.start()
    wait_for(lambda: leaver.active == server.new, "the returning agent to install its assignment")


def test_viewers_may_look_but_only_deployers_may_roll_out(server: Server, agents: Agents) -> None:
    agents.start(server, 2)
    viewer = server.client("viewer")
    assert [a.agent_id for a in viewer.agents()] == ["edge-00", "edge-01"]
    with pytest.raises(AuthError, match="needs role deployer"):
        viewer.create(RolloutRequest(program_sha256=server.new))
    with pytest.raises(AuthError):
        server.client("agent").agents()
    assert viewer.list() == []
