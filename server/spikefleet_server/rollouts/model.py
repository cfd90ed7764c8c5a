"""Rollout domain types: what was asked (spec), where it is (rollout), what agents look like."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from spikefleet.errors import RolloutSpecError


class RolloutState(StrEnum):
    """Where a rollout is; the values are the wire's (Rollout.state)."""

    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    ABORTED = "aborted"


class Stage(StrEnum):
    """Stages of a running phase: canary = shadow (when an agreement gate is set), install,
    bake; every wave = install, bake. "" while rolling back."""

    SHADOW = "shadow"
    INSTALL = "install"
    BAKE = "bake"


class AgentStatus(StrEnum):
    """One agent's status within a rollout (RolloutAgent.status on the wire). Its
    "rolling-back"/"rolled-back" share the strings of RolloutState's but are another type."""

    PENDING = "pending"
    SHADOWING = "shadowing"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"
    OFFLINE = "offline"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


RUNNING = RolloutState.RUNNING
PAUSED = RolloutState.PAUSED
SUCCEEDED = RolloutState.SUCCEEDED
ROLLING_BACK = RolloutState.ROLLING_BACK
ROLLED_BACK = RolloutState.ROLLED_BACK
ABORTED = RolloutState.ABORTED
ACTIVE_STATES = frozenset({RUNNING, PAUSED, ROLLING_BACK})
FINAL_STATES = frozenset({SUCCEEDED, ROLLED_BACK, ABORTED})

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

DEFAULT_INSTALL_TIMEOUT_S = 120.0
SHA256_HEX = 64


@dataclass(frozen=True)
class Gates:
    max_error_rate: float = 0.0
    max_p99_ms: float = 0.0
    min_agreement: float = 0.0
    min_shadow_frames: int = 1


@dataclass(frozen=True)
class RolloutSpec:
    program_sha256: str
    selector: dict[str, str] = field(default_factory=dict)
    canary_count: int = 0
    canary_percent: float = 0.0
    waves: tuple[float, ...] = (100.0,)
    bake_s: float = 30.0
    gates: Gates = field(default_factory=Gates)
    install_timeout_s: float = DEFAULT_INSTALL_TIMEOUT_S
    max_failed_installs: int = 0

    def validate(self) -> None:
        """Raise RolloutSpecError naming the first thing wrong."""
        sha = self.program_sha256
        if len(sha) != SHA256_HEX or any(c not in "0123456789abcdef" for c in sha):
            raise RolloutSpecError(
                f"program {sha!r} is not a sha256 (64 lowercase hex digits): "
                "use the sha256 that `spikefleet programs list` shows"
            )
        for key in self.selector:
            if not key:
                raise RolloutSpecError("selector has an empty label name: use --selector key=value")
        if self.canary_count and self.canary_percent:
            raise RolloutSpecError("give the canary as a count or a percentage, not both")
        if self.canary_count < 0:
            raise RolloutSpecError(f"canary count {self.canary_count} is negative")
        if not 0.0 <= self.canary_percent <= 100.0 or math.isnan(self.canary_percent):
            raise RolloutSpecError(f"canary {self.canary_percent}% is outside 0..100%")
        if not self.waves:
            raise RolloutSpecError("at least one wave is needed: the last one is 100%")
        previous = 0.0
        for wave in self.waves:
            if math.isnan(wave) or not previous < wave <= 100.0:
                raise RolloutSpecError(
                    f"waves {list(self.waves)} must increase strictly within (0, 100]: "
                    "they are cumulative percentages of the targets, e.g. 50%,100%"
                )
            previous = wave
        if self.waves[-1] != 100.0:
            raise RolloutSpecError(f"the last wave is {self.waves[-1]}%: it must be 100%")
        if not 0.0 <= self.bake_s < 7 * 86400 or math.isnan(self.bake_s):
            raise RolloutSpecError(f"bake time {self.bake_s}s must be between 0 and 7 days")
        if self.install_timeout_s <= 0 or math.isnan(self.install_timeout_s):
            raise RolloutSpecError(f"install timeout {self.install_timeout_s}s must be positive")
        if self.max_failed_installs < 0:
            raise RolloutSpecError("max failed installs must not be negative")
        gates = self.gates
        if not 0.0 <= gates.max_error_rate <= 1.0:
            raise RolloutSpecError(f"max error rate {gates.max_error_rate} is outside 0..1")
        if gates.max_p99_ms < 0:
            raise RolloutSpecError(f"max p99 latency {gates.max_p99_ms} ms is negative")
        if not 0.0 <= gates.min_agreement <= 1.0:
            raise RolloutSpecError(f"min agreement {gates.min_agreement} is outside 0..1")
        if gates.min_shadow_frames < 0:
            raise RolloutSpecError("min shadow frames must not be negative")

    @property
    def shadow(self) -> bool:
        return self.gates.min_agreement > 0.0


@dataclass
class RolloutAgent:
    agent_id: str
    phase: int
    from_sha256: str
    status: str = PENDING
    detail: str = ""
    status_unix_ms: int = 0


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str = ""


@dataclass(frozen=True)
class RolloutEvent:
    unix_ms: int
    message: str


@dataclass
class Rollout:
    rollout_id: str
    spec: RolloutSpec
    state: str
    phase: int
    phases: int
    stage: str
    stage_started_unix_ms: int
    created_unix_ms: int
    updated_unix_ms: int
    canary: bool = False
    version: int = 0
    reason: str = ""
    agents: list[RolloutAgent] = field(default_factory=list)
    events: list[RolloutEvent] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)

    def agents_in(self, phase: int) -> list[RolloutAgent]:
        return [a for a in self.agents if a.phase == phase]

    def agents_through(self, phase: int) -> list[RolloutAgent]:
        return [a for a in self.agents if a.phase <= phase]


@dataclass(frozen=True)
class AgentView:
    """What the fleet knows about one agent (from its control stream)."""

    agent_id: str
    labels: dict[str, str]
    backend: str = ""
    program_sha256: str = ""
    previous_sha256: str = ""
    shadow_sha256: str = ""
    health: str = ""
    connected: bool = False
    last_seen_unix_ms: int = 0
    devices: int = 0
    version: str = ""
    # The agent's last install report: sha256, status name (INSTALLED, FAILED, REFUSED,
    # ROLLED_BACK) and reason.
    install_sha256: str = ""
    install_status: str = ""
    install_reason: str = ""
    install_unix_ms: int = 0


@dataclass(frozen=True)
class TelemetrySummary:
    """Telemetry of some agents over a window, for gates."""

    frames: int = 0
    errors: int = 0
    p99_ms: float = 0.0  # the worst batch p99 in the window
    shadow_frames: int = 0
    shadow_agreements: int = 0
    batches: int = 0


def matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
