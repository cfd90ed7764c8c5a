"""The FleetAdmin service's results: an operator's assignment and an agent's deletion."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from spikefleet.v1 import fleet_pb2


@dataclass(frozen=True)
class Assignment:
    """What ``Assign`` set: the agent, its desired program and shadow, and when the agent
    hears of it (``connected``: now; otherwise when it next registers)."""

    agent_id: str
    sha256: str
    shadow_sha256: str
    rollback: bool
    generation: int
    connected: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_proto(self) -> fleet_pb2.AssignResponse:
        return fleet_pb2.AssignResponse(generation=self.generation, connected=self.connected)

    @classmethod
    def from_proto(
        cls, request: fleet_pb2.AssignRequest, reply: fleet_pb2.AssignResponse
    ) -> Assignment:
        return cls(
            agent_id=request.agent_id,
            sha256=request.sha256,
            shadow_sha256=request.shadow_sha256,
            rollback=request.rollback,
            generation=reply.generation,
            connected=reply.connected,
        )


@dataclass(frozen=True)
class DeletedAgent:
    """What ``DeleteAgent`` removed: the agent's record and these rows with it."""

    agent_id: str
    was_connected: bool
    telemetry_batches: int
    installs: int

    def to_proto(self) -> fleet_pb2.DeleteAgentResponse:
        return fleet_pb2.DeleteAgentResponse(
            was_connected=self.was_connected,
            telemetry_batches=self.telemetry_batches,
            installs=self.installs,
        )

    @classmethod
    def from_proto(cls, agent_id: str, reply: fleet_pb2.DeleteAgentResponse) -> DeletedAgent:
        return cls(agent_id, reply.was_connected, reply.telemetry_batches, reply.installs)
