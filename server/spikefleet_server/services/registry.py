"""RegistryService: list, describe, fetch and delete stored programs; publish keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import grpc

from spikefleet.errors import ProgramInUseError, ProgramNotFoundError, RegistryError
from spikefleet.program.signing import PublicKey
from spikefleet.v1 import converter_pb2, registry_pb2, registry_pb2_grpc
from spikefleet_server.registry import ProgramRecord, Registry
from spikefleet_server.services.messages import program_info

CHUNK = 64 * 1024


def _abort(context: Any, exc: RegistryError) -> NoReturn:
    if isinstance(exc, ProgramNotFoundError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, ProgramInUseError):
        code = grpc.StatusCode.FAILED_PRECONDITION
    else:
        code = grpc.StatusCode.INVALID_ARGUMENT
    context.abort(code, str(exc))
    raise AssertionError("unreachable")


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry, published_keys: list[PublicKey]) -> None:
        self.registry = registry
        self.published_keys = published_keys

    def _resolve(self, ref: registry_pb2.ProgramRef) -> ProgramRecord:
        if ref.sha256:
            return self.registry.describe(ref.sha256)
        if ref.name:
            return self.registry.describe(ref.name, ref.version or None)
        raise ProgramNotFoundError("no program given: set sha256, or name (and version)")

    def List(
        self, request: registry_pb2.ListProgramsRequest, context: Any
    ) -> registry_pb2.ListProgramsResponse:
        records = self.registry.list(
            name=request.name or None,
            labels=dict(request.labels),
            latest_only=request.latest_only,
        )
        return registry_pb2.ListProgramsResponse(programs=[program_info(r) for r in records])

    def Describe(self, request: registry_pb2.ProgramRef, context: Any) -> converter_pb2.ProgramInfo:
        try:
            return program_info(self._resolve(request))
        except RegistryError as exc:
            _abort(context, exc)

    def Get(
        self, request: registry_pb2.ProgramRef, context: Any
    ) -> Iterator[registry_pb2.ProgramData]:
        try:
            record = self._resolve(request)
            data = self.registry.get_bytes(record.sha256)
        except RegistryError as exc:
            _abort(context, exc)
        yield registry_pb2.ProgramData(chunk=data[:CHUNK], info=program_info(record))
        for start in range(CHUNK, len(data), CHUNK):
            yield registry_pb2.ProgramData(chunk=data[start : start + CHUNK])

    def Delete(
        self, request: registry_pb2.ProgramRef, context: Any
    ) -> registry_pb2.DeleteProgramResponse:
        try:
            record = self._resolve(request)
            deleted = self.registry.delete(record.sha256)
        except RegistryError as exc:
            _abort(context, exc)
        return registry_pb2.DeleteProgramResponse(deleted=program_info(deleted))

    def TrustedKeys(
        self, request: registry_pb2.TrustedKeysRequest, context: Any
    ) -> registry_pb2.TrustedKeysResponse:
        return registry_pb2.TrustedKeysResponse(
            keys=[
                registry_pb2.PublicKeyInfo(key_id=k.key_id, pem=k.to_pem())
                for k in self.published_keys
            ]
        )
