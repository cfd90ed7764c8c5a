"""The grpc.aio server that hosts the Inference service, with an optional bearer token.

It runs on its own event-loop thread, so the threaded daemon starts and stops
it with plain calls while every inference message is handled by coroutines
(no thread handoff per message, which is what a sync gRPC server costs).
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from spikefleet.errors import AgentConfigError
from spikefleet.secret_files import read_secret
from spikefleet.v1 import inference_pb2_grpc
from spikefleet.wire_guard import DecodeGuard
from spikefleet_agent.inference.service import InferenceService

T = TypeVar("T")

_DENIED = (
    "missing or wrong bearer token: pass the agent's inference token "
    "(metadata authorization: Bearer <token>)"
)


async def _deny(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


def _denial(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that refuses the call."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny)
    return grpc.unary_unary_rpc_method_handler(_deny)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls without ``authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if handler is None or hmac.compare_digest(given, self._expected):
            return handler
        return _denial(handler)


class InferenceServer:
    """A started server: its bound port (0 for a unix socket) and a blocking stop."""

    def __init__(self, service: InferenceService, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._loop = loop
        self._server: grpc.aio.Server | None = None
        self._thread = threading.Thread(target=loop.run_forever, name="inference-loop", daemon=True)
        self.port = 0

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def stop(self, grace: float | None = None) -> None:
        """Finish in-flight calls for up to ``grace`` seconds, then close everything."""
        if self._thread.is_alive():
            if self._server is not None:
                self._call(self._server.stop(grace))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
        self._service.close()


def serve(
    service: InferenceService,
    address: str,
    *,
    token: str = "",
    max_streams: int = 64,
    max_message_bytes: int = 16 * 1024 * 1024,
    tls_cert: str = "",
    tls_key: str = "",
    tls_client_ca: str = "",
) -> InferenceServer:
    """Start the server on its own event-loop thread and return it; with ``tls_cert`` and
    ``tls_key`` it serves TLS, and with ``tls_client_ca`` only to clients whose
    certificate that CA signed (mTLS)."""
    credentials = None
    if tls_cert and tls_key:
        client_ca = Path(tls_client_ca).read_bytes() if tls_client_ca else None
        credentials = grpc.ssl_server_credentials(
            [(read_secret(Path(tls_key), "TLS key"), Path(tls_cert).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
    running = InferenceServer(service, asyncio.new_event_loop())
    running._thread.start()

    async def start() -> int:
        server = grpc.aio.server(
            interceptors=[*([TokenInterceptor(token)] if token else []), DecodeGuard()],
            maximum_concurrent_rpcs=max_streams,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
                # event packets run to megabytes: read them in large chunks
                ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
                ("grpc.experimental.tcp_min_read_chunk_size", 1 << 16),
                ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
            ],
        )
        inference_pb2_grpc.add_InferenceServicer_to_server(service, server)
        running._server = server
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        await server.start()
        return port

    try:
        running.port = running._call(start())
    except RuntimeError as exc:
        running._server = None
        running.stop()
        raise AgentConfigError(f"cannot listen on {address}: {exc}") from exc
    return running
