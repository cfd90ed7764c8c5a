"""Rollout domain types to and from their protobuf messages."""

from __future__ import annotations

from spikefleet.v1 import rollout_pb2
from spikefleet_server.rollouts.model import (
    DEFAULT_INSTALL_TIMEOUT_S,
    AgentView,
    Gates,
    Rollout,
    RolloutSpec,
)


def spec_from_proto(message: rollout_pb2.RolloutSpec) -> RolloutSpec:
    gates = message.gates
    return RolloutSpec(
        program_sha256=message.program_sha256.lower(),
        selector=dict(message.selector),
        canary_count=message.canary_count,
        canary_percent=message.canary_percent,
        waves=tuple(message.waves) or (100.0,),
        bake_s=message.bake_s,
        gates=Gates(
            max_error_rate=gates.max_error_rate,
            max_p99_ms=gates.max_p99_ms,
            min_agreement=gates.min_agreement,
            min_shadow_frames=gates.min_shadow_frames or 1,
        ),
        install_timeout_s=message.install_timeout_s or DEFAULT_INSTALL_TIMEOUT_S,
        max_failed_installs=message.max_failed_installs,
    )


def spec_to_proto(spec: RolloutSpec) -> rollout_pb2.RolloutSpec:
    return rollout_pb2.RolloutSpec(
        program_sha256=spec.program_sha256,
        selector=spec.selector,
        canary_count=spec.canary_count,
        canary_percent=spec.canary_percent,
        waves=list(spec.waves),
        bake_s=spec.bake_s,
        gates=rollout_pb2.Gates(
            max_error_rate=spec.gates.max_error_rate,
            max_p99_ms=spec.gates.max_p99_ms,
            min_agreement=spec.gates.min_agreement,
            min_shadow_frames=spec.gates.min_shadow_frames,
        ),
        install_timeout_s=spec.install_timeout_s,
        max_failed_installs=spec.max_failed_installs,
    )


def rollout_to_proto(rollout: Rollout) -> rollout_pb2.Rollout:
    return rollout_pb2.Rollout(
        rollout_id=rollout.rollout_id,
        spec=spec_to_proto(rollout.spec),
        state=rollout.state,
        phase=rollout.phase,
        phases=rollout.phases,
        stage=rollout.stage,
        stage_started_unix_ms=rollout.stage_started_unix_ms,
        reason=rollout.reason,
        agents=[
            rollout_pb2.RolloutAgent(
                agent_id=a.agent_id,
                phase=a.phase,
                from_sha256=a.from_sha256,
                status=a.status,
                detail=a.detail,
            )
            for a in rollout.agents
        ],
        events=[
            rollout_pb2.RolloutEvent(unix_ms=e.unix_ms, message=e.message) for e in rollout.events
        ],
        gates=[
            rollout_pb2.GateResult(
                name=g.name, passed=g.passed, value=g.value, threshold=g.threshold, detail=g.detail
            )
            for g in rollout.gates
        ],
        created_unix_ms=rollout.created_unix_ms,
        updated_unix_ms=rollout.updated_unix_ms,
        version=rollout.version,
        canary=rollout.canary,
    )


def agent_to_proto(agent: AgentView) -> rollout_pb2.AgentInfo:
    return rollout_pb2.AgentInfo(
        agent_id=agent.agent_id,
        labels=agent.labels,
        backend=agent.backend,
        program_sha256=agent.program_sha256,
        previous_sha256=agent.previous_sha256,
        shadow_sha256=agent.shadow_sha256,
        health=agent.health,
        connected=agent.connected,
        last_seen_unix_ms=agent.last_seen_unix_ms,
        devices=agent.devices,
        version=agent.version,
    )
