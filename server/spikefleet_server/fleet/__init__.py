"""The server side of the agent control channel: agents, assignments, installs, telemetry.

``FleetService`` is the gRPC servicer *and* the API other server areas use:
``assign(agent_id, sha256)``, ``agents()``, ``installs()``, ``telemetry()`` and
``subscribe(callback)`` for live events (the rollout engine builds on these).
"""

from spikefleet_server.fleet.service import FleetEvent, FleetService
from spikefleet_server.fleet.store import (
    AgentRecord,
    AssignmentRecord,
    FleetStore,
    InstallRecord,
    TelemetryRecord,
)

__all__ = [
    "AgentRecord",
    "AssignmentRecord",
    "FleetEvent",
    "FleetService",
    "FleetStore",
    "InstallRecord",
    "TelemetryRecord",
]
