"""The server side of the agent control channel: agents, assignments, installs, telemetry.

``FleetService`` is the gRPC servicer *and* the API other server areas use:
``assign(agent_id, sha256)``, ``agents()``, ``connected()``, the stores
``store`` (agents, assignments, installs) and ``telemetry``, and
``subscribe(callback)`` for live events (the rollout controller builds on
these). :class:`~spikefleet_server.app.ServerApp` wires it.
"""

from __future__ import annotations

from collections.abc import Mapping

from spikefleet_server.auth import Access, Role
from spikefleet_server.fleet.limits import TelemetryLimits
from spikefleet_server.fleet.metrics import FleetMetrics
from spikefleet_server.fleet.service import FleetAdminService, FleetEvent, FleetService
from spikefleet_server.fleet.store import (
    AgentRecord,
    AssignmentRecord,
    FleetStore,
    InstallRecord,
)

FLEET_ACCESS: Mapping[str, Access] = {
    "Connect": Role.AGENT,
    "FetchProgram": frozenset({Role.AGENT, Role.VIEWER}),
}
FLEET_ADMIN_ACCESS: Mapping[str, Access] = {"Assign": Role.ADMIN, "DeleteAgent": Role.ADMIN}

__all__ = [
    "FLEET_ACCESS",
    "FLEET_ADMIN_ACCESS",
    "AgentRecord",
    "AssignmentRecord",
    "FleetAdminService",
    "FleetEvent",
    "FleetMetrics",
    "FleetService",
    "FleetStore",
    "InstallRecord",
    "TelemetryLimits",
]
