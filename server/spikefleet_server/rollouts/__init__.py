"""Fleet rollouts: canary with shadow evaluation, waves, health gates, automatic rollback.

:class:`RolloutController` is the state machine (an asyncio task while the
server runs), :class:`FleetAdapter` its view of the fleet, :class:`RolloutStore`
its state in the database, :class:`RolloutsServicer` the gRPC service;
:class:`~spikefleet_server.app.ServerApp` wires them.
"""

from __future__ import annotations

from spikefleet_server.rollouts.controller import RolloutController
from spikefleet_server.rollouts.fleet_view import FleetAdapter
from spikefleet_server.rollouts.model import Gates, Rollout, RolloutSpec
from spikefleet_server.rollouts.service import ROLES, SERVICE_NAME, RolloutsServicer
from spikefleet_server.rollouts.store import RolloutStore

__all__ = [
    "ROLES",
    "SERVICE_NAME",
    "FleetAdapter",
    "Gates",
    "Rollout",
    "RolloutController",
    "RolloutSpec",
    "RolloutStore",
    "RolloutsServicer",
]
