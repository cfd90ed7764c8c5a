"""Fleet rollouts: canary with shadow evaluation, waves, health gates, automatic rollback.

The server loads this package as an extension: :func:`install` adds the
Rollouts service on top of the fleet extension (which must come first) and
runs the controller for as long as the server runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spikefleet.errors import RolloutSpecError, ServerConfigError, SpikefleetError
from spikefleet_server.rollouts.controller import RolloutController
from spikefleet_server.rollouts.fleet_view import FleetAdapter
from spikefleet_server.rollouts.model import Gates, Rollout, RolloutSpec
from spikefleet_server.rollouts.service import ROLES, SERVICE_NAME, add_to_server
from spikefleet_server.rollouts.store import RolloutStore
from spikefleet_server.storage import Database

if TYPE_CHECKING:
    from spikefleet_server.app import ServerApp
    from spikefleet_server.fleet import FleetService
    from spikefleet_server.registry import Registry


def build(
    fleet: FleetService,
    db: Database,
    *,
    resolve_program: Callable[[str], str] | None = None,
    tick_s: float = 0.2,
) -> RolloutController:
    adapter = FleetAdapter(fleet)
    return RolloutController(
        RolloutStore(db), adapter, adapter, resolve_program=resolve_program, tick_s=tick_s
    )


def registry_resolver(registry: Registry) -> Callable[[str], str]:
    """A program reference (sha256, unique prefix, or name = latest version) -> its sha256."""

    def resolve(ref: str) -> str:
        try:
            return registry.describe(ref).sha256
        except SpikefleetError as exc:
            raise RolloutSpecError(f"cannot roll out {ref!r}: {exc}") from None

    return resolve


def install(app: ServerApp) -> None:
    fleet: FleetService | None = getattr(app, "fleet", None)
    if fleet is None:
        raise ServerConfigError(
            "the rollouts extension needs the fleet extension (spikefleet_server.fleet) "
            "installed before it"
        )
    controller = build(fleet, app.db, resolve_program=registry_resolver(app.registry))
    app.add_service(SERVICE_NAME, lambda server: add_to_server(controller, server), ROLES)
    app.rollouts = controller  # type: ignore[attr-defined]
    controller.start()
    app.on_stop.insert(0, controller.stop)


__all__ = [
    "ROLES",
    "SERVICE_NAME",
    "FleetAdapter",
    "Gates",
    "Rollout",
    "RolloutController",
    "RolloutSpec",
    "RolloutStore",
    "build",
    "install",
    "registry_resolver",
]
