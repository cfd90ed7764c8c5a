"""What each area may ask of storage: one interface per area, typed as a Protocol.

The services are typed against these, so what a service needs of the database is
read here, not found by reading SQL. Each has one implementation, written once
for SQLite and PostgreSQL on SQLAlchemy Core (see docs/server.md, "The database
and its migrations"):

- registry: :class:`ProgramStorage`, implemented by ``spikefleet_server.registry.Registry``
- fleet: :class:`FleetStorage`, by ``spikefleet_server.fleet.store.FleetStore``
- rollouts: :class:`RolloutStorage`, by ``spikefleet_server.rollouts.store.RolloutStore``
- telemetry: :class:`TelemetryStorage`, by ``spikefleet_server.telemetry.TelemetryStore``

Every method is a coroutine whose blocking work runs on the storage threads. One
thing crosses areas below this line: a fleet assignment checks, inside its own
transaction, that the registry still holds the program, and a program delete
asks the fleet who uses it (``Registry.require``, ``FleetStore.usage_in``); the
app wires those two, since they share a connection.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from spikefleet.v1 import fleet_pb2
    from spikefleet.wire.registry import ProgramInfo
    from spikefleet_server.fleet.store import (
        AgentRecord,
        AssignmentRecord,
        InstallRecord,
        Registration,
    )
    from spikefleet_server.rollouts.model import Rollout, RolloutAgent
    from spikefleet_server.telemetry import IngestResult, TelemetryRecord, TelemetryTotals


class ProgramStorage(Protocol):
    """Signed programs by sha256, versioned per name."""

    async def put(
        self,
        program: bytes,
        *,
        name: str,
        labels: Mapping[str, str] | None = None,
        fidelity: Mapping[str, Any] | None = None,
        source_sha256: str = "",
    ) -> ProgramInfo:
        """Sign and store; the existing record when these program bytes are stored."""
        ...

    async def describe(self, ref: str, version: int | None = None) -> ProgramInfo:
        """By sha256, unique sha256 prefix, or name (and version; default the latest)."""
        ...

    async def get_bytes(self, sha256: str) -> bytes:
        """The signed envelope, checked against its sha256."""
        ...

    async def list(
        self,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        latest_only: bool = False,
    ) -> builtins.list[ProgramInfo]: ...

    async def delete(self, sha256: str) -> ProgramInfo:
        """Remove it, unless agents run or are assigned it (ProgramInUseError)."""
        ...

    def stats(self) -> tuple[int, int]:
        """(programs, bytes stored); blocking, for the metrics thread."""
        ...


class FleetStorage(Protocol):
    """Agents as their control streams report them, their desired programs, installs."""

    async def register(self, reg: fleet_pb2.Register) -> Registration:
        """Record it connected with what it registered, and read back its last telemetry
        seq and assignment, in one transaction."""
        ...

    async def heartbeat(self, agent_id: str, beat: fleet_pb2.Heartbeat) -> None: ...

    async def set_connected(self, agent_id: str, connected: bool) -> None: ...

    async def disconnected(self, agent_id: str) -> bool:
        """Record its stream here as ended, unless another replica has it by now."""
        ...

    async def reclaim(self, agent_ids: Sequence[str], old_id: int, new_id: int) -> int:
        """This replica's liveness lapsed: record the agents whose streams it still holds
        as connected here, unless another replica has them."""
        ...

    async def mark_all_disconnected(self) -> None:
        """At the start of a single server: nobody is connected, whatever was stored."""
        ...

    async def agents(self) -> list[AgentRecord]: ...

    async def agent(self, agent_id: str) -> AgentRecord | None: ...

    async def delete_agent(self, agent_id: str) -> tuple[int, int] | None:
        """Forget the agent; (telemetry rows, install rows) deleted, None if unknown."""
        ...

    async def assign(
        self, agent_id: str, sha256: str, shadow_sha256: str = "", rollback: bool = False
    ) -> AssignmentRecord:
        """Set the agent's desired program (which must be stored); next generation."""
        ...

    async def assign_many(
        self, assignments: Sequence[tuple[str, str, str, bool]]
    ) -> list[AssignmentRecord]:
        """:meth:`assign` for several agents in one transaction."""
        ...

    async def assignment(self, agent_id: str) -> AssignmentRecord | None: ...

    async def usage(self, sha256: str) -> list[str]:
        """The agents that run or are assigned this program."""
        ...

    async def record_install(
        self, agent_id: str, report: fleet_pb2.InstallReport
    ) -> InstallRecord: ...

    async def installs(
        self, agent_id: str | None = None, after_id: int = 0
    ) -> list[InstallRecord]: ...


class RolloutStorage(Protocol):
    """Rollouts; each controller step commits one rollout in one transaction."""

    async def create(self, rollout: Rollout, events: list[str]) -> Rollout: ...

    async def save(
        self, rollout: Rollout, events: list[str], changed: list[RolloutAgent] | None = None
    ) -> Rollout:
        """Commit it (and ``changed`` agents, or all), unless someone committed it since
        it was read (ConcurrentUpdateError)."""
        ...

    async def get(self, rollout_id: str) -> Rollout: ...

    async def version(self, rollout_id: str) -> int:
        """Its committed version: cheap, for watchers."""
        ...

    async def list_rollouts(self, *, active_only: bool = False) -> list[Rollout]: ...


class TelemetryStorage(Protocol):
    """Agents' telemetry batches, each (agent, seq) stored once."""

    async def ingest_many(
        self, items: list[tuple[str, fleet_pb2.TelemetryBatch]], seen: Sequence[str] = ()
    ) -> list[IngestResult]:
        """Store a group in one transaction (and refresh the ``seen`` agents' last
        seen); per batch, new or why refused."""
        ...

    async def prune(self, older_than_ms: int, max_per_agent: int) -> int: ...

    async def last_seq(self, agent_id: str) -> int: ...

    async def of_agent(
        self, agent_id: str, after_seq: int = 0, limit: int = 10_000
    ) -> list[TelemetryRecord]: ...

    async def since(
        self, since_ms: int, agent_ids: Sequence[str] | None = None
    ) -> list[TelemetryRecord]: ...

    async def ended_within(
        self,
        since_ms: int,
        until_ms: int,
        *,
        agent_ids: Sequence[str] = (),
        program_sha256s: Sequence[str] = (),
        after: tuple[str, int] | None = None,
        limit: int = 2_000,
    ) -> list[TelemetryRecord]:
        """One page, by (agent_id, seq), of the known agents' batches that ended in the
        range (of these agents and programs when given)."""
        ...

    async def totals(
        self,
        agent_ids: Sequence[str],
        since_ms: int,
        *,
        program_sha256: str = "",
        shadow_sha256: str = "",
    ) -> TelemetryTotals:
        """Sums of the agents' batches since ``since_ms`` (for rollout gates)."""
        ...
