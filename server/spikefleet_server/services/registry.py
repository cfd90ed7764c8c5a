"""RegistryService: list, describe, fetch and delete stored programs; publish keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc

from spikefleet.errors import KeyFileError, ProgramInUseError, ProgramNotFoundError, RegistryError
from spikefleet.v1 import converter_pb2, registry_pb2, registry_pb2_grpc
from spikefleet.wire.registry import ProgramInfo
from spikefleet_server.keys import PublishedKey
from spikefleet_server.storage.areas import ProgramStorage

CHUNK = 64 * 1024


async def _abort(context: Any, exc: RegistryError) -> NoReturn:
    if isinstance(exc, ProgramNotFoundError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, ProgramInUseError):
        code = grpc.StatusCode.FAILED_PRECONDITION
    else:
        code = grpc.StatusCode.INVALID_ARGUMENT
    await context.abort(code, str(exc))
    raise AssertionError("unreachable")


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(
        self, registry: ProgramStorage, published_keys: Callable[[], Sequence[PublishedKey]]
    ) -> None:
        """``published_keys`` is read at each TrustedKeys call, so an endorsement added to
        ``trusted_keys_dir`` reaches agents without a restart."""
        self.registry = registry
        self.published_keys = published_keys

    async def _resolve(self, ref: registry_pb2.ProgramRef) -> ProgramInfo:
        if ref.sha256:
            return await self.registry.describe(ref.sha256)
        if ref.name:
            return await self.registry.describe(ref.name, ref.version or None)
        raise ProgramNotFoundError("no program given: set sha256, or name (and version)")

    async def List(
        self, request: registry_pb2.ListProgramsRequest, context: Any
    ) -> registry_pb2.ListProgramsResponse:
        records = await self.registry.list(
            name=request.name or None,
            labels=dict(request.labels),
            latest_only=request.latest_only,
        )
        return registry_pb2.ListProgramsResponse(programs=[r.to_proto() for r in records])

    async def Describe(
        self, request: registry_pb2.ProgramRef, context: Any
    ) -> converter_pb2.ProgramInfo:
        try:
            return (await self._resolve(request)).to_proto()
        except RegistryError as exc:
            await _abort(context, exc)

    async def Get(
        self, request: registry_pb2.ProgramRef, context: Any
    ) -> AsyncIterator[registry_pb2.ProgramData]:
        try:
            record = await self._resolve(request)
            data = await self.registry.get_bytes(record.sha256)
        except RegistryError as exc:
            await _abort(context, exc)
        yield registry_pb2.ProgramData(chunk=data[:CHUNK], info=record.to_proto())
        for start in range(CHUNK, len(data), CHUNK):
            yield registry_pb2.ProgramData(chunk=data[start : start + CHUNK])

    async def Delete(
        self, request: registry_pb2.ProgramRef, context: Any
    ) -> registry_pb2.DeleteProgramResponse:
        try:
            record = await self._resolve(request)
            deleted = await self.registry.delete(record.sha256)
        except RegistryError as exc:
            await _abort(context, exc)
        return registry_pb2.DeleteProgramResponse(deleted=deleted.to_proto())

    async def TrustedKeys(
        self, request: registry_pb2.TrustedKeysRequest, context: Any
    ) -> registry_pb2.TrustedKeysResponse:
        try:
            published = await asyncio.to_thread(self.published_keys)  # reads key files
        except KeyFileError as exc:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the server's trusted_keys_dir holds a bad key file: {exc}",
            )
            raise AssertionError("unreachable") from exc
        return registry_pb2.TrustedKeysResponse(
            keys=[
                registry_pb2.PublicKeyInfo(
                    key_id=p.key.key_id,
                    pem=p.key.to_pem(),
                    endorsed_by=p.endorsement.endorser if p.endorsement else "",
                    endorsement=p.endorsement.signature if p.endorsement else b"",
                )
                for p in published
            ]
        )
