"""gRPC status -> the named SpikefleetError a caller can catch."""

from __future__ import annotations

import grpc

from spikefleet.errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    QuotaError,
    ServerError,
    ServerUnavailableError,
)

_BY_CODE: dict[grpc.StatusCode, type[ServerError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
}


def from_rpc_error(error: grpc.RpcError, address: str) -> ServerError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    cls = _BY_CODE.get(code, ServerError)
    if cls is ServerUnavailableError:
        details = f"cannot reach spikefleet-server at {address}: {details}"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
        details = f"spikefleet-server at {address} did not answer in time"
    return cls(details, code.name)
