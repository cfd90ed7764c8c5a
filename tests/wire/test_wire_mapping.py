"""The client and the server map each message in one place (spikefleet.wire): what one
side sends, the other reads back equal, with the same defaults."""

from __future__ import annotations

from enum import StrEnum

import pytest

from spikefleet.client.rollouts import RolloutRequest
from spikefleet.errors import ServerError
from spikefleet.v1 import fleet_pb2, rollout_pb2
from spikefleet.wire import rollouts
from spikefleet.wire.converter import ConvertProgress
from spikefleet.wire.fleet import Assignment, DeletedAgent
from spikefleet.wire.registry import ProgramInfo
from spikefleet.wire.rollouts import (
    AgentStatus,
    AgentSummary,
    GateResult,
    Gates,
    Rollout,
    RolloutAgent,
    RolloutEvent,
    RolloutSpec,
    RolloutState,
    Stage,
)
from spikefleet.wire.telemetry import TelemetryStats, TelemetrySummary

SHA = "ab" * 32


def test_a_request_with_nothing_set_is_the_spec_with_its_defaults() -> None:
    assert RolloutRequest(SHA) == RolloutSpec(SHA)
    assert RolloutRequest(SHA, min_agreement=0.9, bake_s=0) == RolloutSpec(
        SHA, bake_s=0, gates=Gates(min_agreement=0.9)
    )


def test_what_the_wire_leaves_zero_or_empty_reads_as_the_default() -> None:
    # waves, install timeout and shadow frames: 0 or empty means the default; a bake of 0
    # is no bake
    assert RolloutSpec.from_proto(rollout_pb2.RolloutSpec(program_sha256=SHA.upper())) == (
        RolloutSpec(SHA, bake_s=0)
    )


def test_a_spec_the_client_sends_is_the_spec_the_server_reads() -> None:
    spec = RolloutRequest(
        SHA,
        selector={"site": "lab"},
        canary_percent=10,
        waves=(50.0, 100.0),
        max_error_rate=0.01,
        max_p99_ms=5,
        min_agreement=0.98,
        min_shadow_frames=50,
        install_timeout_s=30,
        max_failed_installs=2,
    )
    assert RolloutSpec.from_proto(spec.to_proto()) == spec


def test_a_rollout_reads_back_as_sent() -> None:
    rollout = Rollout(
        rollout_id="r1",
        spec=RolloutSpec(SHA, canary_count=1),
        state=RolloutState.ROLLING_BACK,
        phase=1,
        phases=2,
        stage=Stage.NONE,
        stage_started_unix_ms=5,
        created_unix_ms=1,
        updated_unix_ms=9,
        canary=True,
        version=4,
        reason="error rate",
        agents=[RolloutAgent("a1", 0, "cd" * 32, AgentStatus.ROLLED_BACK, "runs cd")],
        events=[RolloutEvent(1, "created"), RolloutEvent(9, "rolling back")],
        gates=[GateResult("error-rate", False, 0.2, 0.01, "2 of 10")],
    )
    back = Rollout.from_proto(rollout.to_proto())
    assert back == rollout
    assert back.final is False and back.phase_name(0) == "canary"
    assert back.counts() == {"rolled-back": 1}


def test_every_state_reads_as_its_own_member() -> None:
    for kind in (RolloutState, Stage, AgentStatus):
        assert issubclass(kind, StrEnum)
        assert len(kind.__members__) == len(kind), f"{kind.__name__} has aliases"
    assert set(RolloutState) == rollouts.FINAL_STATES | rollouts.ACTIVE_STATES


def test_a_state_this_client_does_not_know_is_a_server_error_naming_it() -> None:
    message = Rollout(
        "r1", RolloutSpec(SHA), RolloutState.RUNNING, 0, 1, Stage.BAKE, 0, 0, 0
    ).to_proto()
    message.state = "hibernating"
    with pytest.raises(ServerError, match=r"'hibernating'.*upgrade"):
        Rollout.from_proto(message)


def test_agents_programs_and_telemetry_read_back_as_sent() -> None:
    agent = AgentSummary("a1", {"site": "lab"}, "akida", SHA, "", "", "ok", True, 7, 1, "0.1")
    assert AgentSummary.from_proto(agent.to_proto()) == agent
    info = ProgramInfo(SHA, "digits", 3, {"k": "v"}, {"agreement": 0.99}, 5, 1024, "key", "")
    assert ProgramInfo.from_proto(info.to_proto()) == info
    stats = TelemetryStats(
        "a1", 2, 100, 900, 100, 1, {"timeout": 1}, 1, 9, 50.0, 1.5, 3.0, [60, 40],
        {"fc1": 0.25}, 10, 9, [SHA],
    )  # fmt: skip
    summary = TelemetrySummary(1, 9, [stats], [])
    assert TelemetrySummary.from_proto(summary.to_proto()) == summary


def test_fleet_admin_results_read_back_as_sent() -> None:
    request = fleet_pb2.AssignRequest(agent_id="a1", sha256=SHA, rollback=False)
    assignment = Assignment("a1", SHA, "", False, generation=3, connected=True)
    assert Assignment.from_proto(request, assignment.to_proto()) == assignment
    deleted = DeletedAgent("a1", True, 10, 2)
    assert DeletedAgent.from_proto("a1", deleted.to_proto()) == deleted


def test_conversion_progress_reads_back_as_sent_and_never_past_done() -> None:
    progress = ConvertProgress("sign", 0.5, "signing")
    assert ConvertProgress.from_proto(progress.to_proto()) == progress
    assert ConvertProgress.from_proto(ConvertProgress("store", 1.2, "").to_proto()).fraction == 1
