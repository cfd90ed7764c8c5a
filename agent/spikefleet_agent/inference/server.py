"""The gRPC server that hosts the Inference service, with an optional bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from spikefleet.errors import AgentConfigError
from spikefleet.v1 import inference_pb2_grpc
from spikefleet_agent.inference.service import InferenceService


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuse calls without ``authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        return _deny


def _deny_behavior(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or wrong bearer token: pass the agent's inference token "
        "(metadata authorization: Bearer <token>)",
    )


_deny = grpc.stream_stream_rpc_method_handler(lambda it, ctx: _deny_behavior(None, ctx))


def serve(
    service: InferenceService,
    address: str,
    *,
    token: str = "",
    max_workers: int = 8,
    max_streams: int = 64,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> tuple[grpc.Server, int]:
    """Start the server; return it and the bound port (0 for a unix socket)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="inference"),
        interceptors=[TokenInterceptor(token)] if token else [],
        maximum_concurrent_rpcs=max_streams,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    inference_pb2_grpc.add_InferenceServicer_to_server(service, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise AgentConfigError(f"cannot listen on {address}: {exc}") from exc
    server.start()
    return server, port
