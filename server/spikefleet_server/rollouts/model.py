"""Rollout domain types: what was asked (spec), where it is (rollout), what agents look like.

The types the wire carries are the shared ones of :mod:`spikefleet.wire.rollouts`
(the client shows the same); this module adds what only the server's controller
uses, and the short names it steps with.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikefleet.wire.rollouts import (
    ACTIVE_STATES,
    DEFAULT_INSTALL_TIMEOUT_S,
    FINAL_STATES,
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
from spikefleet_server.telemetry import TelemetryTotals

RUNNING = RolloutState.RUNNING
PAUSED = RolloutState.PAUSED
SUCCEEDED = RolloutState.SUCCEEDED
ROLLING_BACK = RolloutState.ROLLING_BACK
ROLLED_BACK = RolloutState.ROLLED_BACK
ABORTED = RolloutState.ABORTED

SHADOW = Stage.SHADOW
INSTALL = Stage.INSTALL
BAKE = Stage.BAKE

PENDING = AgentStatus.PENDING
SHADOWING = AgentStatus.SHADOWING
INSTALLING = AgentStatus.INSTALLING
INSTALLED = AgentStatus.INSTALLED
FAILED = AgentStatus.FAILED
OFFLINE = AgentStatus.OFFLINE
AGENT_ROLLING_BACK = AgentStatus.ROLLING_BACK
AGENT_ROLLED_BACK = AgentStatus.ROLLED_BACK


@dataclass(frozen=True)
class AgentView(AgentSummary):
    """What the fleet knows about one agent (from its control stream): what ListAgents
    sends, and the agent's last install report, which only the controller reads."""

    # The agent's last install report: sha256, status name (INSTALLED, FAILED, REFUSED,
    # ROLLED_BACK) and reason.
    install_sha256: str = ""
    install_status: str = ""
    install_reason: str = ""
    install_unix_ms: int = 0


TelemetrySummary = TelemetryTotals
"""Telemetry of some agents over a window, for gates (the telemetry store sums it)."""


def matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


__all__ = [
    "ABORTED",
    "ACTIVE_STATES",
    "AGENT_ROLLED_BACK",
    "AGENT_ROLLING_BACK",
    "BAKE",
    "DEFAULT_INSTALL_TIMEOUT_S",
    "FAILED",
    "FINAL_STATES",
    "INSTALL",
    "INSTALLED",
    "INSTALLING",
    "OFFLINE",
    "PAUSED",
    "PENDING",
    "ROLLED_BACK",
    "ROLLING_BACK",
    "RUNNING",
    "SHADOW",
    "SHADOWING",
    "SUCCEEDED",
    "AgentStatus",
    "AgentView",
    "GateResult",
    "Gates",
    "Rollout",
    "RolloutAgent",
    "RolloutEvent",
    "RolloutSpec",
    "RolloutState",
    "Stage",
    "TelemetrySummary",
    "matches",
]
