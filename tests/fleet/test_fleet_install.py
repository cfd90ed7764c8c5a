"""Assignments from the server: verified, installed, served; tampered ones refused."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from fleet_helpers import FleetServer
from support.agent import make_program, random_frames, signed_program, tamper
from support.waiting import wait_for

from spikefleet.client.agent import AgentClient
from spikefleet.engine import Engine
from spikefleet.program.signing import SigningKey
from spikefleet_agent.daemon import Agent


def statuses(server: FleetServer, agent_id: str) -> list[tuple[str, str, str]]:
    return [(r.status, r.sha256, r.reason) for r in server.fleet.store.installs(agent_id)]


def active_sha(agent: Agent) -> str:
    active = agent.runtime.active if agent.runtime else None
    return active.sha256 if active else ""


def test_an_assigned_program_is_installed_and_serves_the_engines_predictions(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    program = make_program(3)
    sha, data = signed_program(program, signing_key)
    fleet_server.programs[sha] = data
    agent = start_agent("edge-1")
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-1"], "connect")

    fleet_server.fleet.assign("edge-1", sha)
    wait_for(lambda: statuses(fleet_server, "edge-1"), "an install report")
    assert statuses(fleet_server, "edge-1") == [("INSTALLED", sha, "")]
    record = fleet_server.fleet.store.agent("edge-1")
    assert record is not None and record.program_sha256 == sha

    frames = random_frames(8, seed=1)
    with AgentClient(f"127.0.0.1:{agent.inference_port}") as client:
        prediction = client.infer(frames)
    assert prediction.program_sha256 == sha
    np.testing.assert_array_equal(prediction.classes, Engine(program).predict(frames))


def test_a_tampered_program_is_refused_reported_and_the_old_one_keeps_serving(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    good_sha, good = signed_program(make_program(1), signing_key)
    bad_sha, bad = signed_program(make_program(2), signing_key)
    fleet_server.programs[good_sha] = good
    fleet_server.programs[bad_sha] = tamper(bad)
    agent = start_agent("edge-1")
    fleet_server.fleet.assign("edge-1", good_sha)
    wait_for(lambda: len(statuses(fleet_server, "edge-1")) == 1, "the good program")

    fleet_server.fleet.assign("edge-1", bad_sha)
    wait_for(lambda: len(statuses(fleet_server, "edge-1")) == 2, "the refusal")
    assert statuses(fleet_server, "edge-1")[-1] == ("REFUSED", bad_sha, "tampered")
    assert active_sha(agent) == good_sha
    with AgentClient(f"127.0.0.1:{agent.inference_port}") as client:
        assert client.infer(random_frames(2)).program_sha256 == good_sha


def test_a_program_missing_from_the_registry_fails_with_fetch(
    fleet_server: FleetServer, start_agent: Callable[..., Agent]
) -> None:
    start_agent("edge-1")
    fleet_server.fleet.assign("edge-1", "ab" * 32)
    wait_for(lambda: statuses(fleet_server, "edge-1"), "an install report")
    assert statuses(fleet_server, "edge-1") == [("FAILED", "ab" * 32, "fetch")]


def test_rollback_returns_to_the_previous_slot(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    sha1, data1 = signed_program(make_program(1), signing_key)
    sha2, data2 = signed_program(make_program(2), signing_key)
    fleet_server.programs.update({sha1: data1, sha2: data2})
    agent = start_agent("edge-1")
    fleet_server.fleet.assign("edge-1", sha1)
    wait_for(lambda: len(statuses(fleet_server, "edge-1")) == 1, "program 1")
    fleet_server.fleet.assign("edge-1", sha2)
    wait_for(lambda: len(statuses(fleet_server, "edge-1")) == 2, "program 2")
    assert active_sha(agent) == sha2

    fleet_server.fleet.assign("edge-1", "", rollback=True)
    wait_for(lambda: len(statuses(fleet_server, "edge-1")) == 3, "the rollback report")
    assert active_sha(agent) == sha1
    assert statuses(fleet_server, "edge-1")[-1] == ("ROLLED_BACK", sha1, "")
    desired = fleet_server.fleet.store.assignment("edge-1")
    assert desired is not None and (desired.sha256, desired.rollback) == (sha1, False)


def test_an_agent_that_was_away_gets_its_assignment_when_it_registers(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    sha, data = signed_program(make_program(1), signing_key)
    fleet_server.programs[sha] = data
    fleet_server.fleet.assign("edge-9", sha)  # not connected yet
    agent = start_agent("edge-9")
    wait_for(lambda: active_sha(agent) == sha, "the install after registering")


def test_shadow_program_runs_beside_the_active_one_and_agreement_is_reported(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    active_program, candidate = make_program(1), make_program(2)
    sha1, data1 = signed_program(active_program, signing_key)
    sha2, data2 = signed_program(candidate, signing_key)
    fleet_server.programs.update({sha1: data1, sha2: data2})
    agent = start_agent("edge-1")
    fleet_server.fleet.assign("edge-1", sha1, shadow_sha256=sha2)
    wait_for(lambda: agent.runtime is not None and agent.runtime.shadow is not None, "the shadow")
    frames = random_frames(50, seed=8)
    with AgentClient(f"127.0.0.1:{agent.inference_port}") as client:
        prediction = client.infer(frames)
    assert prediction.program_sha256 == sha1  # clients only ever see the active program
    agent.flush_telemetry()
    wait_for(lambda: fleet_server.fleet.telemetry.of_agent("edge-1"), "telemetry")
    batch = fleet_server.fleet.telemetry.of_agent("edge-1")[-1].batch
    agree = int((Engine(active_program).predict(frames) == Engine(candidate).predict(frames)).sum())
    assert (batch.shadow_sha256, batch.shadow_frames, batch.shadow_agreements) == (sha2, 50, agree)
