"""Typed client of the server's Rollouts service, and the parsers its CLI shares.

``Client(...).rollouts`` is one of these. Calls return plain dataclasses; a refused
call raises the ServerError subclass matching its gRPC status (NotFoundError,
InvalidRequestError, ConflictError, ...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from spikefleet.client.errors import from_rpc_error
from spikefleet.client.resolve import is_sha256, resolve_id
from spikefleet.errors import RolloutSpecError
from spikefleet.v1 import rollout_pb2, rollout_pb2_grpc
from spikefleet.wire.rollouts import (
    AgentSummary,
    GateResult,
    Gates,
    Rollout,
    RolloutAgent,
    RolloutSpec,
)

T = TypeVar("T")

__all__ = [
    "AgentSummary",
    "GateStatus",
    "RolloutAgentStatus",
    "RolloutRequest",
    "RolloutStatus",
    "RolloutsClient",
    "parse_canary",
    "parse_duration",
    "parse_selector",
    "parse_waves",
]

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


# -- results and requests: the shared mapping -------------------------------------------------

#: The client's names for the shared types (spikefleet.wire.rollouts).
RolloutStatus = Rollout
RolloutAgentStatus = RolloutAgent
GateStatus = GateResult


def RolloutRequest(
    program_sha256: str,
    *,
    selector: Mapping[str, str] | None = None,
    canary_count: int | None = None,
    canary_percent: float | None = None,
    waves: Sequence[float] | None = None,
    bake_s: float | None = None,
    max_error_rate: float | None = None,
    max_p99_ms: float | None = None,
    min_agreement: float | None = None,
    min_shadow_frames: int | None = None,
    install_timeout_s: float | None = None,
    max_failed_installs: int | None = None,
) -> RolloutSpec:
    """A :class:`RolloutSpec` from flat keywords, the gates' among them (as the CLI's
    flags give them); one left None takes the spec's default.

    ``program_sha256`` must be a sha256: for a name or prefix pass
    ``client.programs.resolve(ref).sha256``."""
    if not is_sha256(program_sha256):
        raise RolloutSpecError(
            f"program_sha256 {program_sha256!r} is not a sha256 (64 hex digits): "
            "for a name or prefix pass client.programs.resolve(ref).sha256"
        )
    given: dict[str, Any] = {
        "selector": dict(selector) if selector is not None else None,
        "canary_count": canary_count,
        "canary_percent": canary_percent,
        "waves": tuple(waves) if waves is not None else None,
        "bake_s": bake_s,
        "install_timeout_s": install_timeout_s,
        "max_failed_installs": max_failed_installs,
    }
    gates: dict[str, Any] = {
        "max_error_rate": max_error_rate,
        "max_p99_ms": max_p99_ms,
        "min_agreement": min_agreement,
        "min_shadow_frames": min_shadow_frames,
    }
    return RolloutSpec(
        program_sha256.lower(),
        gates=Gates(**{k: v for k, v in gates.items() if v is not None}),
        **{k: v for k, v in given.items() if v is not None},
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

    def create(self, request: RolloutSpec) -> Rollout:
        reply = self._call(
            self._stub.CreateRollout, rollout_pb2.CreateRolloutRequest(spec=request.to_proto())
        )
        return Rollout.from_proto(reply)

    def resolve(self, ref: str) -> str:
        """The id of the rollout ``ref`` names: its id or a unique prefix of it."""
        return resolve_id(ref, self.list(), lambda r: r.rollout_id, what="rollout").rollout_id

    def get(self, rollout_id: str) -> Rollout:
        """One rollout, by id or unique id prefix."""
        reply = self._call(
            self._stub.GetRollout,
            rollout_pb2.GetRolloutRequest(rollout_id=self.resolve(rollout_id)),
        )
        return Rollout.from_proto(reply)

    def list(self, *, active_only: bool = False) -> list[Rollout]:
        reply = self._call(
            self._stub.ListRollouts, rollout_pb2.ListRolloutsRequest(active_only=active_only)
        )
        return [Rollout.from_proto(r) for r in reply.rollouts]

    def watch(self, rollout_id: str) -> Iterator[Rollout]:
        """The rollout now and after every change, ending when it reaches a final state."""
        rollout_id = self.resolve(rollout_id)
        try:
            for message in self._stub.WatchRollout(
                rollout_pb2.GetRolloutRequest(rollout_id=rollout_id), metadata=self._metadata
            ):
                yield Rollout.from_proto(message)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self._address) from None

    def pause(self, rollout_id: str, reason: str = "") -> Rollout:
        return self._action(self._stub.PauseRollout, rollout_id, reason)

    def resume(self, rollout_id: str) -> Rollout:
        return self._action(self._stub.ResumeRollout, rollout_id, "")

    def abort(self, rollout_id: str, reason: str = "") -> Rollout:
        return self._action(self._stub.AbortRollout, rollout_id, reason)

    def rollback(self, rollout_id: str, reason: str = "") -> Rollout:
        return self._action(self._stub.RollbackRollout, rollout_id, reason)

    def _action(self, fn: Callable[..., Any], rollout_id: str, reason: str) -> Rollout:
        request = rollout_pb2.RolloutActionRequest(
            rollout_id=self.resolve(rollout_id), reason=reason
        )
        return Rollout.from_proto(self._call(fn, request))
