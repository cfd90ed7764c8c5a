"""The rollout ports implemented on the fleet's own API (``spikefleet_server.fleet``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from spikefleet_server.rollouts.model import AgentView, TelemetrySummary, matches
from spikefleet_server.rollouts.ports import Assignment

if TYPE_CHECKING:
    from spikefleet_server.fleet import AgentRecord, FleetService, InstallRecord


class FleetAdapter:
    """FleetView and Assigner over a FleetService.

    The newest install report per agent is kept in memory and refreshed
    incrementally (install ids only grow), so listing a large fleet at every
    controller step costs one small query.
    """

    def __init__(self, fleet: FleetService) -> None:
        self._fleet = fleet
        self._installs: dict[str, InstallRecord] = {}
        self._after_id = 0

    async def assign(
        self, agent_id: str, sha256: str, *, shadow_sha256: str = "", rollback: bool = False
    ) -> object:
        return await self._fleet.assign(
            agent_id, sha256, shadow_sha256=shadow_sha256, rollback=rollback
        )

    async def assign_many(self, assignments: Sequence[Assignment]) -> object:
        return await self._fleet.assign_many(
            [(a.agent_id, a.sha256, a.shadow_sha256, a.rollback) for a in assignments]
        )

    async def agents(self, selector: dict[str, str] | None = None) -> list[AgentView]:
        installs = await self._latest_installs()
        return [
            self._view(record, installs.get(record.agent_id))
            for record in await self._fleet.agents()
            if selector is None or matches(record.labels, selector)
        ]

    async def agent(self, agent_id: str) -> AgentView | None:
        record = await self._fleet.store.agent(agent_id)
        if record is None:
            return None
        return self._view(record, (await self._latest_installs()).get(agent_id))

    async def telemetry(
        self,
        agent_ids: Sequence[str],
        since_unix_ms: int,
        *,
        program_sha256: str = "",
        shadow_sha256: str = "",
    ) -> TelemetrySummary:
        if not agent_ids:
            return TelemetrySummary()
        return await self._fleet.telemetry.totals(
            agent_ids, since_unix_ms, program_sha256=program_sha256, shadow_sha256=shadow_sha256
        )

    async def _latest_installs(self) -> dict[str, InstallRecord]:
        for record in await self._fleet.store.installs(after_id=self._after_id):
            self._installs[record.agent_id] = record
            self._after_id = max(self._after_id, record.id)
        return dict(self._installs)

    @staticmethod
    def _view(record: AgentRecord, install: InstallRecord | None) -> AgentView:
        return AgentView(
            agent_id=record.agent_id,
            labels=record.labels,
            backend=record.backend,
            program_sha256=record.program_sha256,
            previous_sha256=record.previous_sha256,
            shadow_sha256=record.shadow_sha256,
            health=record.health,
            connected=record.connected,
            last_seen_unix_ms=record.last_seen_ms,
            devices=len(record.inventory),
            version=record.version,
            install_sha256=install.sha256 if install else "",
            install_status=install.status if install else "",
            install_reason=install.reason if install else "",
            install_unix_ms=install.at_ms if install else 0,
        )
