"""The server side of the agent control channel: agents, assignments, installs, telemetry.

``FleetService`` is the gRPC servicer *and* the API other server areas use:
``assign(agent_id, sha256)``, ``agents()``, ``installs()``, ``telemetry()`` and
``subscribe(callback)`` for live events (the rollout engine builds on these).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spikefleet.v1 import fleet_pb2_grpc
from spikefleet_server.auth import Role
from spikefleet_server.fleet.limits import TelemetryLimits
from spikefleet_server.fleet.metrics import FleetMetrics
from spikefleet_server.fleet.service import FleetAdminService, FleetEvent, FleetService
from spikefleet_server.fleet.store import (
    AgentRecord,
    AssignmentRecord,
    FleetStore,
    InstallRecord,
    TelemetryRecord,
)

if TYPE_CHECKING:
    from spikefleet_server.app import ServerApp

SERVICE_NAME = "spikefleet.v1.Fleet"
ADMIN_SERVICE_NAME = "spikefleet.v1.FleetAdmin"


def install(app: ServerApp) -> None:
    """Join the server: tables in its database, programs from its registry, the Fleet
    service for agent tokens, registry deletes guarded, metrics on the server's /metrics,
    agent streams ended when the server drains, ``app.fleet`` for other areas."""
    store = FleetStore(app.db, require_program=app.registry.require)
    metrics = FleetMetrics.create(app.metrics.registry)
    config = app.config
    limits = TelemetryLimits(
        max_batch_bytes=config.telemetry_max_batch_bytes,
        rate_bytes_per_s=config.telemetry_rate_bytes_per_s,
        retention_days=config.telemetry_retention_days,
        max_batches_per_agent=config.telemetry_max_batches_per_agent,
    )
    service = FleetService(store, app.registry.get_bytes, metrics=metrics, limits=limits)
    app.registry.usage = store.usage_in
    app.add_service(
        SERVICE_NAME,
        lambda server: fleet_pb2_grpc.add_FleetServicer_to_server(service, server),
        {"Connect": Role.AGENT, "FetchProgram": frozenset({Role.AGENT, Role.VIEWER})},
    )
    admin = FleetAdminService(service)
    app.add_service(
        ADMIN_SERVICE_NAME,
        lambda server: fleet_pb2_grpc.add_FleetAdminServicer_to_server(admin, server),
        {"Assign": Role.ADMIN, "DeleteAgent": Role.ADMIN},
    )
    app.on_drain.append(service.drain)
    app.on_stop.append(service.close)
    app.fleet = service  # type: ignore[attr-defined]


__all__ = [
    "AgentRecord",
    "AssignmentRecord",
    "FleetAdminService",
    "FleetEvent",
    "FleetMetrics",
    "FleetService",
    "FleetStore",
    "InstallRecord",
    "TelemetryLimits",
    "TelemetryRecord",
    "install",
]
