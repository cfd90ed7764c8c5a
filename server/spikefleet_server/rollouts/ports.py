"""What the rollout controller needs from the fleet, as two small async Protocols.

The fleet (agents table, control stream, telemetry ingest) lives in
``spikefleet_server.fleet``; keeping the controller behind these ports lets it
be specified and tested on its own and adapted to the fleet in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from spikefleet_server.rollouts.model import AgentView, TelemetrySummary


class FleetView(Protocol):
    async def agents(self, selector: dict[str, str] | None = None) -> list[AgentView]:
        """Every known agent whose labels match ``selector`` (all when None), by id."""
        ...

    async def agent(self, agent_id: str) -> AgentView | None: ...

    async def telemetry(
        self,
        agent_ids: Sequence[str],
        since_unix_ms: int,
        *,
        program_sha256: str = "",
        shadow_sha256: str = "",
    ) -> TelemetrySummary:
        """Sum of the agents' telemetry batches that ended after ``since_unix_ms``.

        Only batches reported while running ``program_sha256`` (and shadowing
        ``shadow_sha256``) count when those are given.
        """
        ...


@dataclass(frozen=True)
class Assignment:
    """An agent's desired state: ``sha256`` "" keeps what it runs; ``rollback`` asks it to
    go back to its previous slot."""

    agent_id: str
    sha256: str
    shadow_sha256: str = ""
    rollback: bool = False


class Assigner(Protocol):
    async def assign(
        self, agent_id: str, sha256: str, *, shadow_sha256: str = "", rollback: bool = False
    ) -> object:
        """Make this the agent's desired state (persisted; sent now or when it reconnects).

        ``sha256`` "" keeps what the agent runs; ``rollback`` asks it to go back to
        its previous slot.
        """
        ...

    async def assign_many(self, assignments: Sequence[Assignment]) -> object:
        """:meth:`assign` for several agents, stored in one transaction."""
        ...
