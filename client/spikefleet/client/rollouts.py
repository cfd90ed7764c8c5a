"""Typed client of the server's Rollouts service, and the parsers its CLI shares.

``Client(...).rollouts`` is one of these. Calls return plain dataclasses; a refused
call raises the ServerError subclass matching its gRPC status (NotFoundError,
InvalidRequestError, ConflictError, ...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import grpc

from spikefleet.client.errors import from_rpc_error
from spikefleet.client.resolve import is_sha256, resolve_id
from spikefleet.errors import RolloutSpecError
from spikefleet.v1 import rollout_pb2, rollout_pb2_grpc

T = TypeVar("T")

FINAL_STATES = frozenset({"succeeded", "rolled-back", "aborted"})

# -- parsers for people's input -------------------------------------------------------------


def parse_selector(items: Sequence[str]) -> dict[str, str]:
    """``["site=lab", "tier=edge"]`` (or comma-joined) -> ``{"site": "lab", "tier": "edge"}``."""
    selector: dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise RolloutSpecError(f"selector {part!r} is not key=value (e.g. site=lab)")
            selector[key.strip()] = value.strip()
    return selector


def parse_canary(text: str) -> tuple[int, float]:
    """``"3"`` -> (3 agents, 0%); ``"10%"`` -> (0, 10.0)."""
    text = text.strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 < percent <= 100 or math.isnan(percent):
                raise ValueError
            return 0, percent
        count = int(text)
        if count < 0:
            raise ValueError
        return count, 0.0
    except ValueError:
        raise RolloutSpecError(
            f"canary {text!r} is neither a number of agents (3) nor a percentage in (0, 100] (10%)"
        ) from None


def parse_waves(text: str) -> tuple[float, ...]:
    """``"50%,100%"`` -> (50.0, 100.0): cumulative percentages of the targets."""
    waves: list[float] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            waves.append(float(part.removesuffix("%")))
        except ValueError:
            raise RolloutSpecError(f"wave {part!r} is not a percentage (e.g. 50%)") from None
    if not waves:
        raise RolloutSpecError("--waves is empty: give cumulative percentages such as 50%,100%")
    return tuple(waves)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"1.5h"``, ``"250ms"`` or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise RolloutSpecError(f"duration {text!r} is not like 30s, 2m, 1h or 250ms")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


# -- results --------------------------------------------------------------------------------


@dataclass
class AgentSummary:
    agent_id: str
    labels: dict[str, str]
    backend: str
    program_sha256: str
    previous_sha256: str
    shadow_sha256: str
    health: str
    connected: bool
    last_seen_unix_ms: int
    devices: int
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_proto(cls, a: Any) -> AgentSummary:
        return cls(
            agent_id=a.agent_id,
            labels=dict(a.labels),
            backend=a.backend,
            program_sha256=a.program_sha256,
            previous_sha256=a.previous_sha256,
            shadow_sha256=a.shadow_sha256,
            health=a.health,
            connected=a.connected,
            last_seen_unix_ms=a.last_seen_unix_ms,
            devices=a.devices,
            version=a.version,
        )


@dataclass
class RolloutAgentStatus:
    agent_id: str
    phase: int
    from_sha256: str
    status: str
    detail: str


@dataclass
class GateStatus:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass
class RolloutRequest:
    program_sha256: str
    selector: dict[str, str] = field(default_factory=dict)
    canary_count: int = 0
    canary_percent: float = 0.0
    waves: tuple[float, ...] = (100.0,)
    bake_s: float = 30.0
    max_error_rate: float = 0.0
    max_p99_ms: float = 0.0
    min_agreement: float = 0.0
    min_shadow_frames: int = 1
    install_timeout_s: float = 0.0
    max_failed_installs: int = 0

    def __post_init__(self) -> None:
        if not is_sha256(self.program_sha256):
            raise RolloutSpecError(
                f"program_sha256 {self.program_sha256!r} is not a sha256 (64 hex digits): "
                "for a name or prefix pass client.programs.resolve(ref).sha256"
            )
        self.program_sha256 = self.program_sha256.lower()

    def to_proto(self) -> rollout_pb2.RolloutSpec:
        return rollout_pb2.RolloutSpec(
            program_sha256=self.program_sha256,
            selector=self.selector,
            canary_count=self.canary_count,
            canary_percent=self.canary_percent,
            waves=list(self.waves),
            bake_s=self.bake_s,
            gates=rollout_pb2.Gates(
                max_error_rate=self.max_error_rate,
                max_p99_ms=self.max_p99_ms,
                min_agreement=self.min_agreement,
                min_shadow_frames=self.min_shadow_frames,
            ),
            install_timeout_s=self.install_timeout_s,
            max_failed_installs=self.max_failed_installs,
        )

    @classmethod
    def from_proto(cls, spec: rollout_pb2.RolloutSpec) -> RolloutRequest:
        return cls(
            program_sha256=spec.program_sha256,
            selector=dict(spec.selector),
            canary_count=spec.canary_count,
            canary_percent=spec.canary_percent,
            waves=tuple(spec.waves),
            bake_s=spec.bake_s,
            max_error_rate=spec.gates.max_error_rate,
            max_p99_ms=spec.gates.max_p99_ms,
            min_agreement=spec.gates.min_agreement,
            min_shadow_frames=spec.gates.min_shadow_frames,
            install_timeout_s=spec.install_timeout_s,
            max_failed_installs=spec.max_failed_installs,
        )


@dataclass
class RolloutStatus:
    rollout_id: str
    spec: RolloutRequest
    state: str
    phase: int
    phases: int
    stage: str
    stage_started_unix_ms: int
    reason: str
    agents: list[RolloutAgentStatus]
    events: list[tuple[int, str]]
    gates: list[GateStatus]
    created_unix_ms: int
    updated_unix_ms: int
    version: int
    canary: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def phase_name(self, phase: int) -> str:
        if self.canary and phase == 0:
            return "canary"
        return f"wave {phase if self.canary else phase + 1}"

    def counts(self, phase: int | None = None) -> dict[str, int]:
        """Agents per status, in one phase or overall."""
        counts: dict[str, int] = {}
        for agent in self.agents:
            if phase is None or agent.phase == phase:
                counts[agent.status] = counts.get(agent.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_proto(cls, message: rollout_pb2.Rollout) -> RolloutStatus:
        return cls(
            rollout_id=message.rollout_id,
            spec=RolloutRequest.from_proto(message.spec),
            state=message.state,
            phase=message.phase,
            phases=message.phases,
            stage=message.stage,
            stage_started_unix_ms=message.stage_started_unix_ms,
            reason=message.reason,
            agents=[
                RolloutAgentStatus(a.agent_id, a.phase, a.from_sha256, a.status, a.detail)
                for a in message.agents
            ],
            events=[(e.unix_ms, e.message) for e in message.events],
            gates=[
                GateStatus(g.name, g.passed, g.value, g.threshold, g.detail) for g in message.gates
            ],
            created_unix_ms=message.created_unix_ms,
            updated_unix_ms=message.updated_unix_ms,
            version=message.version,
            canary=message.canary,
        )


# -- the client -----------------------------------------------------------------------------


class RolloutsClient:
    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 30.0,
        address: str = "",
    ) -> None:
        self._stub = rollout_pb2_grpc.RolloutsStub(channel)
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self._address = address

    def _call(self, fn: Callable[..., T], request: Any) -> T:
        try:
            return fn(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self._address) from None

    def agents(self, selector: dict[str, str] | None = None) -> list[AgentSummary]:
        reply = self._call(
            self._stub.ListAgents, rollout_pb2.ListAgentsRequest(selector=selector or {})
        )
        return [AgentSummary.from_proto(a) for a in reply.agents]

    def create(self, request: RolloutRequest) -> RolloutStatus:
        reply = self._call(
            self._stub.CreateRollout, rollout_pb2.CreateRolloutRequest(spec=request.to_proto())
        )
        return RolloutStatus.from_proto(reply)

    def resolve(self, ref: str) -> str:
        """The id of the rollout ``ref`` names: its id or a unique prefix of it."""
        return resolve_id(ref, self.list(), lambda r: r.rollout_id, what="rollout").rollout_id

    def get(self, rollout_id: str) -> RolloutStatus:
        """One rollout, by id or unique id prefix."""
        reply = self._call(
            self._stub.GetRollout,
            rollout_pb2.GetRolloutRequest(rollout_id=self.resolve(rollout_id)),
        )
        return RolloutStatus.from_proto(reply)

    def list(self, *, active_only: bool = False) -> list[RolloutStatus]:
        reply = self._call(
            self._stub.ListRollouts, rollout_pb2.ListRolloutsRequest(active_only=active_only)
        )
        return [RolloutStatus.from_proto(r) for r in reply.rollouts]

    def watch(self, rollout_id: str) -> Iterator[RolloutStatus]:
        """The rollout now and after every change, ending when it reaches a final state."""
        rollout_id = self.resolve(rollout_id)
        try:
            for message in self._stub.WatchRollout(
                rollout_pb2.GetRolloutRequest(rollout_id=rollout_id), metadata=self._metadata
            ):
                yield RolloutStatus.from_proto(message)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self._address) from None

    def pause(self, rollout_id: str, reason: str = "") -> RolloutStatus:
        return self._action(self._stub.PauseRollout, rollout_id, reason)

    def resume(self, rollout_id: str) -> RolloutStatus:
        return self._action(self._stub.ResumeRollout, rollout_id, "")

    def abort(self, rollout_id: str, reason: str = "") -> RolloutStatus:
        return self._action(self._stub.AbortRollout, rollout_id, reason)

    def rollback(self, rollout_id: str, reason: str = "") -> RolloutStatus:
        return self._action(self._stub.RollbackRollout, rollout_id, reason)

    def _action(self, fn: Callable[..., Any], rollout_id: str, reason: str) -> RolloutStatus:
        request = rollout_pb2.RolloutActionRequest(
            rollout_id=self.resolve(rollout_id), reason=reason
        )
        return RolloutStatus.from_proto(self._call(fn, request))
