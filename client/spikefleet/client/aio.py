"""``AsyncClient``: the server's registry, fleet and telemetry for asyncio programs.

The same calls, names and results as :class:`spikefleet.Client` (programs by name,
``name@version`` or prefix; agents by id or prefix), on a grpc.aio channel of the
caller's event loop. Conversion uploads and rollouts stay on the sync client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from spikefleet.client.client import check_program_bytes
from spikefleet.client.errors import from_rpc_error
from spikefleet.client.resolve import assignment_target, is_sha256, resolve_id, resolve_program
from spikefleet.client.rollouts import AgentSummary
from spikefleet.client.telemetry import TelemetrySummary, unix_ms
from spikefleet.client.tls import ClientTLS, bearer_metadata, open_channel
from spikefleet.errors import SpikefleetError
from spikefleet.v1 import (
    fleet_pb2,
    fleet_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    rollout_pb2,
    rollout_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from spikefleet.wire.fleet import Assignment
from spikefleet.wire.registry import ProgramInfo


class AsyncPrograms:
    """The registry: ``client.programs``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = registry_pb2_grpc.RegistryServiceStub(client.channel)

    async def list(
        self,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        latest_only: bool = False,
    ) -> list[ProgramInfo]:
        request = registry_pb2.ListProgramsRequest(
            name=name or "", labels=dict(labels or {}), latest_only=latest_only
        )
        reply = await self._client._call(self._stub.List, request)
        return [ProgramInfo.from_proto(p) for p in reply.programs]

    async def resolve(self, ref: str, version: int | None = None) -> ProgramInfo:
        """The program ``ref`` names (see :meth:`spikefleet.client.Programs.resolve`)."""
        if version is None and is_sha256(ref.strip()):
            return await self.describe(ref)
        return resolve_program(ref, await self.list(), version)

    async def _ref(self, ref: str, version: int | None) -> registry_pb2.ProgramRef:
        ref = ref.strip()
        if version is None and is_sha256(ref):
            return registry_pb2.ProgramRef(sha256=ref.lower())
        return registry_pb2.ProgramRef(sha256=(await self.resolve(ref, version)).sha256)

    async def describe(self, ref: str, version: int | None = None) -> ProgramInfo:
        request = await self._ref(ref, version)
        return ProgramInfo.from_proto(await self._client._call(self._stub.Describe, request))

    async def get(self, ref: str, version: int | None = None) -> bytes:
        """The signed program (a SignedProgram envelope), checked against its sha256."""

        request = await self._ref(ref, version)
        parts: list[bytes] = []
        info: ProgramInfo | None = None
        try:
            async for message in self._stub.Get(
                request, metadata=self._client._metadata, timeout=self._client.timeout
            ):
                if message.HasField("info"):
                    info = ProgramInfo.from_proto(message.info)
                parts.append(message.chunk)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self._client.address) from None
        data = b"".join(parts)
        check_program_bytes(ref, data, info)
        return data


class AsyncClient:
    """A grpc.aio connection to spikefleet-server; use it inside a running event loop.
    TLS unless the address is loopback (``tls=None``), as :class:`spikefleet.Client`;
    ``tls=False`` chooses plaintext explicitly (the server allows it on loopback only)."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: ClientTLS | bool | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = bearer_metadata(token)
        self.channel = open_channel(address, tls, aio=True)
        self.programs = AsyncPrograms(self)
        self._rollouts = rollout_pb2_grpc.RolloutsStub(self.channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.address) from None

    async def agents(self, selector: Mapping[str, str] | None = None) -> list[AgentSummary]:
        """The agents the server knows (those whose labels match ``selector``)."""
        request = rollout_pb2.ListAgentsRequest(selector=dict(selector or {}))
        reply = await self._call(self._rollouts.ListAgents, request)
        return [AgentSummary.from_proto(a) for a in reply.agents]

    async def resolve_agent(self, ref: str) -> str:
        """The id of the known agent ``ref`` names: its id or a unique prefix of it."""
        return resolve_id(ref, await self.agents(), lambda a: a.agent_id, what="agent").agent_id

    async def assign(
        self, agent: str, program: str = "", *, shadow: str = "", rollback: bool = False
    ) -> Assignment:
        """As :meth:`spikefleet.Client.assign` (admin only)."""
        if not program and not rollback:
            raise SpikefleetError("assign needs a program, or rollback=True")
        agent = assignment_target(agent, [a.agent_id for a in await self.agents()])
        sha256 = (await self.programs.resolve(program)).sha256 if program else ""
        shadow_sha256 = (await self.programs.resolve(shadow)).sha256 if shadow else ""
        request = fleet_pb2.AssignRequest(
            agent_id=agent, sha256=sha256, shadow_sha256=shadow_sha256, rollback=rollback
        )
        reply = await self._call(fleet_pb2_grpc.FleetAdminStub(self.channel).Assign, request)
        return Assignment.from_proto(request, reply)

    async def telemetry(
        self,
        *,
        since: int | str | None = None,
        until: int | str | None = None,
        agents: Sequence[str] = (),
        programs: Sequence[str] = (),
    ) -> TelemetrySummary:
        """As :meth:`spikefleet.Client.telemetry`."""
        request = telemetry_pb2.TelemetryQueryRequest(
            since_unix_ms=unix_ms(since),
            until_unix_ms=unix_ms(until),
            agent_ids=[await self.resolve_agent(a) for a in agents],
            program_sha256s=[(await self.programs.resolve(p)).sha256 for p in programs],
        )
        stub = telemetry_pb2_grpc.TelemetryQueryStub(self.channel)
        return TelemetrySummary.from_proto(await self._call(stub.Summarize, request))
