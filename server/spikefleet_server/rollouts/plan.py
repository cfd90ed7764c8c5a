"""Which targets go in the canary and in each wave."""

from __future__ import annotations

import math

from spikefleet.errors import RolloutSpecError
from spikefleet_server.rollouts.model import AgentView, RolloutSpec


def canary_size(spec: RolloutSpec, targets: int) -> int:
    if spec.canary_count:
        return min(spec.canary_count, targets)
    if spec.canary_percent:
        return min(targets, max(1, math.ceil(targets * spec.canary_percent / 100.0)))
    return 0


def plan_phases(spec: RolloutSpec, targets: list[AgentView]) -> tuple[list[list[str]], bool]:
    """Agent ids per phase ([canary, wave 1, ...]) and whether phase 0 is a canary.

    Waves that would be empty (few targets) are dropped.

    Connected, healthy agents come first so the canary runs where telemetry
    flows; ties break by id, so the plan is deterministic.
    """
    if not targets:
        raise RolloutSpecError(
            f"no agent matches the selector {spec.selector or '{}'}: "
            "check `spikefleet agents` for their labels"
        )
    ordered = sorted(targets, key=lambda a: (not a.connected, a.health != "ok", a.agent_id))
    ids = [a.agent_id for a in ordered]
    total = len(ids)
    canary = canary_size(spec, total)
    if spec.shadow and not canary:
        raise RolloutSpecError(
            "a minimum agreement is checked on the canary by shadow evaluation: "
            "give a canary (canary_count or canary_percent)"
        )
    bounds = [canary]
    bounds += [max(bounds[0], math.ceil(total * wave / 100.0)) for wave in spec.waves]
    phases: list[list[str]] = []
    start = 0
    for end in bounds:
        if end > start:
            phases.append(ids[start:end])
            start = end
    return phases, canary > 0
