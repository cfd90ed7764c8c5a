"""The Rollouts service's domain types and their one mapping to and from the wire.

A :class:`RolloutSpec` is what a caller asks for (the defaults, including what a
0 on the wire means, are defined here once); a :class:`Rollout` is where it is;
an :class:`AgentSummary` is what the fleet knows about one agent. The server
stores and steps these, the client shows them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum, unique
from typing import Any, NamedTuple, TypeVar

from spikefleet.errors import RolloutSpecError, ServerError
from spikefleet.v1 import rollout_pb2

E = TypeVar("E", bound=StrEnum)


@unique
class RolloutState(StrEnum):
    """Where a rollout is (``Rollout.state``)."""

    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    ABORTED = "aborted"


@unique
class Stage(StrEnum):
    """The stage of a running phase: the canary is shadow (when an agreement gate is
    set), install, bake; every wave install, bake. NONE while rolling back or done."""

    NONE = ""
    SHADOW = "shadow"
    INSTALL = "install"
    BAKE = "bake"


@unique
class AgentStatus(StrEnum):
    """One agent's status within a rollout (``RolloutAgent.status``). ROLLING_BACK and
    ROLLED_BACK read as RolloutState's do, since they mean the same for one agent; they
    are another type, so mypy refuses a comparison of the two."""

    PENDING = "pending"
    SHADOWING = "shadowing"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"
    OFFLINE = "offline"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


ACTIVE_STATES = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ROLLING_BACK})
FINAL_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.ROLLED_BACK, RolloutState.ABORTED})

DEFAULT_INSTALL_TIMEOUT_S = 120.0
"""What ``install_timeout_s`` = 0 on the wire means."""
SHA256_HEX = 64


def decode(kind: type[E], value: str) -> E:
    """``value`` as a member of ``kind``; a value this release does not know (a newer
    server's) is a ServerError naming it, not a ValueError deep in a caller."""
    try:
        return kind(value)
    except ValueError:
        raise ServerError(
            f"the server sent {kind.__name__} {value!r}, which this spikefleet does not "
            "know: upgrade the client"
        ) from None


@dataclass(frozen=True)
class Gates:
    """Health gates; 0 = no gate."""

    max_error_rate: float = 0.0  # errors / frames over the bake
    max_p99_ms: float = 0.0  # worst agent p99 latency over the bake
    min_agreement: float = 0.0  # shadow top-1 agreement during the canary
    min_shadow_frames: int = 1  # shadow frames needed before agreement can pass

    def to_proto(self) -> rollout_pb2.Gates:
        return rollout_pb2.Gates(
            max_error_rate=self.max_error_rate,
            max_p99_ms=self.max_p99_ms,
            min_agreement=self.min_agreement,
            min_shadow_frames=self.min_shadow_frames,
        )

    @classmethod
    def from_proto(cls, message: rollout_pb2.Gates) -> Gates:
        return cls(
            max_error_rate=message.max_error_rate,
            max_p99_ms=message.max_p99_ms,
            min_agreement=message.min_agreement,
            min_shadow_frames=message.min_shadow_frames or cls.min_shadow_frames,
        )


@dataclass(frozen=True)
class RolloutSpec:
    """What a rollout is asked to do (``CreateRollout``'s spec, and every rollout's)."""

    program_sha256: str
    selector: dict[str, str] = field(default_factory=dict)
    canary_count: int = 0  # the canary as a number of agents, or
    canary_percent: float = 0.0  # as a percentage of the targets (one of the two)
    waves: tuple[float, ...] = (100.0,)  # cumulative percentages after the canary
    bake_s: float = 30.0
    gates: Gates = field(default_factory=Gates)
    install_timeout_s: float = DEFAULT_INSTALL_TIMEOUT_S
    max_failed_installs: int = 0

    @property
    def shadow(self) -> bool:
        """Whether the canary runs the program as a shadow first (an agreement gate)."""
        return self.gates.min_agreement > 0.0

    def validate(self) -> None:
        """Raise RolloutSpecError naming the first field that is wrong and its range."""
        sha = self.program_sha256
        if len(sha) != SHA256_HEX or any(c not in "0123456789abcdef" for c in sha):
            raise RolloutSpecError(
                f"program_sha256 {sha!r} is not a sha256 (64 lowercase hex digits): "
                "use the sha256 the registry lists"
            )
        for key in self.selector:
            if not key:
                raise RolloutSpecError("selector has an empty label name: give label=value")
        if self.canary_count and self.canary_percent:
            raise RolloutSpecError(
                "give the canary as a count or a percentage, not both "
                "(canary_count or canary_percent)"
            )
        if self.canary_count < 0:
            raise RolloutSpecError(f"canary_count {self.canary_count} is negative")
        if not 0.0 <= self.canary_percent <= 100.0 or math.isnan(self.canary_percent):
            raise RolloutSpecError(f"canary_percent {self.canary_percent}% is outside 0..100%")
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

    def to_proto(self) -> rollout_pb2.RolloutSpec:
        return rollout_pb2.RolloutSpec(
            program_sha256=self.program_sha256,
            selector=self.selector,
            canary_count=self.canary_count,
            canary_percent=self.canary_percent,
            waves=list(self.waves),
            bake_s=self.bake_s,
            gates=self.gates.to_proto(),
            install_timeout_s=self.install_timeout_s,
            max_failed_installs=self.max_failed_installs,
        )

    @classmethod
    def from_proto(cls, message: rollout_pb2.RolloutSpec) -> RolloutSpec:
        """The spec a message asks for; what the wire leaves 0 or empty gets the default."""
        return cls(
            program_sha256=message.program_sha256.lower(),
            selector=dict(message.selector),
            canary_count=message.canary_count,
            canary_percent=message.canary_percent,
            waves=tuple(message.waves) or cls.waves,
            bake_s=message.bake_s,
            gates=Gates.from_proto(message.gates),
            install_timeout_s=message.install_timeout_s or DEFAULT_INSTALL_TIMEOUT_S,
            max_failed_installs=message.max_failed_installs,
        )


@dataclass
class RolloutAgent:
    """One target agent of a rollout. ``status_unix_ms`` (when its status last changed)
    is the server's own clock for install timeouts and is not sent (0 at a client)."""

    agent_id: str
    phase: int  # 0 = canary (when there is one), 1.. = waves
    from_sha256: str  # what it ran before this rollout
    status: AgentStatus = AgentStatus.PENDING
    detail: str = ""
    status_unix_ms: int = 0

    def to_proto(self) -> rollout_pb2.RolloutAgent:
        return rollout_pb2.RolloutAgent(
            agent_id=self.agent_id,
            phase=self.phase,
            from_sha256=self.from_sha256,
            status=self.status,
            detail=self.detail,
        )

    @classmethod
    def from_proto(cls, message: rollout_pb2.RolloutAgent) -> RolloutAgent:
        return cls(
            agent_id=message.agent_id,
            phase=message.phase,
            from_sha256=message.from_sha256,
            status=decode(AgentStatus, message.status),
            detail=message.detail,
        )


@dataclass(frozen=True)
class GateResult:
    """One gate's last evaluation: error-rate, p99-latency, agreement or installs."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str = ""

    def to_proto(self) -> rollout_pb2.GateResult:
        return rollout_pb2.GateResult(
            name=self.name,
            passed=self.passed,
            value=self.value,
            threshold=self.threshold,
            detail=self.detail,
        )

    @classmethod
    def from_proto(cls, message: rollout_pb2.GateResult) -> GateResult:
        return cls(message.name, message.passed, message.value, message.threshold, message.detail)


class RolloutEvent(NamedTuple):
    """A line of a rollout's history (a tuple, so ``for unix_ms, message in events``)."""

    unix_ms: int
    message: str


@dataclass
class Rollout:
    """A rollout as committed: ``version`` increases with every step."""

    rollout_id: str
    spec: RolloutSpec
    state: RolloutState
    phase: int
    phases: int
    stage: Stage
    stage_started_unix_ms: int
    created_unix_ms: int
    updated_unix_ms: int
    canary: bool = False  # phase 0 is a canary
    version: int = 0
    reason: str = ""  # why it stopped or rolled back
    agents: list[RolloutAgent] = field(default_factory=list)
    events: list[RolloutEvent] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)  # the last evaluation

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def phase_name(self, phase: int) -> str:
        if self.canary and phase == 0:
            return "canary"
        return f"wave {phase if self.canary else phase + 1}"

    def agents_in(self, phase: int) -> list[RolloutAgent]:
        return [a for a in self.agents if a.phase == phase]

    def agents_through(self, phase: int) -> list[RolloutAgent]:
        return [a for a in self.agents if a.phase <= phase]

    def counts(self, phase: int | None = None) -> dict[str, int]:
        """Agents per status, in one phase or overall."""
        counts: dict[str, int] = {}
        for agent in self.agents:
            if phase is None or agent.phase == phase:
                counts[agent.status] = counts.get(agent.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_proto(self) -> rollout_pb2.Rollout:
        return rollout_pb2.Rollout(
            rollout_id=self.rollout_id,
            spec=self.spec.to_proto(),
            state=self.state,
            phase=self.phase,
            phases=self.phases,
            stage=self.stage,
            stage_started_unix_ms=self.stage_started_unix_ms,
            reason=self.reason,
            agents=[a.to_proto() for a in self.agents],
            events=[rollout_pb2.RolloutEvent(unix_ms=ms, message=text) for ms, text in self.events],
            gates=[g.to_proto() for g in self.gates],
            created_unix_ms=self.created_unix_ms,
            updated_unix_ms=self.updated_unix_ms,
            version=self.version,
            canary=self.canary,
        )

    @classmethod
    def from_proto(cls, message: rollout_pb2.Rollout) -> Rollout:
        return cls(
            rollout_id=message.rollout_id,
            spec=RolloutSpec.from_proto(message.spec),
            state=decode(RolloutState, message.state),
            phase=message.phase,
            phases=message.phases,
            stage=decode(Stage, message.stage),
            stage_started_unix_ms=message.stage_started_unix_ms,
            created_unix_ms=message.created_unix_ms,
            updated_unix_ms=message.updated_unix_ms,
            canary=message.canary,
            version=message.version,
            reason=message.reason,
            agents=[RolloutAgent.from_proto(a) for a in message.agents],
            events=[RolloutEvent(e.unix_ms, e.message) for e in message.events],
            gates=[GateResult.from_proto(g) for g in message.gates],
        )


@dataclass(frozen=True)
class AgentSummary:
    """What the fleet knows about one agent (``ListAgents``)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_proto(self) -> rollout_pb2.AgentInfo:
        return rollout_pb2.AgentInfo(
            agent_id=self.agent_id,
            labels=self.labels,
            backend=self.backend,
            program_sha256=self.program_sha256,
            previous_sha256=self.previous_sha256,
            shadow_sha256=self.shadow_sha256,
            health=self.health,
            connected=self.connected,
            last_seen_unix_ms=self.last_seen_unix_ms,
            devices=self.devices,
            version=self.version,
        )

    @classmethod
    def from_proto(cls, message: rollout_pb2.AgentInfo) -> AgentSummary:
        return cls(
            agent_id=message.agent_id,
            labels=dict(message.labels),
            backend=message.backend,
            program_sha256=message.program_sha256,
            previous_sha256=message.previous_sha256,
            shadow_sha256=message.shadow_sha256,
            health=message.health,
            connected=message.connected,
            last_seen_unix_ms=message.last_seen_unix_ms,
            devices=message.devices,
            version=message.version,
        )
