"""Bytes that are not a valid request answer INVALID_ARGUMENT, on every grpc.aio server.

grpc.aio decodes a request before the method runs, and when protobuf refuses the
bytes it answers UNKNOWN ("Unexpected DecodeError"), which tells the caller
nothing and looks like a server bug. :class:`DecodeGuard` wraps every method's
request decoder: a request that does not decode becomes a marker, and the call
(unary, or the first bad message of a stream) is ended with INVALID_ARGUMENT
naming the message type. The server and the agent's inference API both use it;
put it last in the interceptor list so authentication still runs first.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc


class Undecodable:
    """Stands in for a request whose bytes did not decode."""

    __slots__ = ("error", "size", "type_name")

    def __init__(self, type_name: str, size: int, error: Exception) -> None:
        self.type_name, self.size, self.error = type_name, size, error

    @property
    def message(self) -> str:
        return (
            f"the request ({self.size} bytes) is not a valid {self.type_name} message: "
            f"{self.error or type(self.error).__name__}; use a client generated from "
            "protos/spikefleet/v1"
        )


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", None) or "protobuf")


def _guarded_decoder(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    type_name = _type_name(deserializer)

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, or anything a decoder raises
            return Undecodable(type_name, len(data), exc)

    return decode


def _async_requests(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async def iterate() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            yield request

    return iterate()


class _GuardedContext:
    """The call's context, whose ``read()`` (grpc.aio's reader API) checks each message."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def read(self) -> Any:
        request = await self._context.read()
        if isinstance(request, Undecodable):
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _sync_requests(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _guard_behavior(behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def async_gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request_streaming:
                request = _async_requests(request, context)
                context = _GuardedContext(context)
            elif isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            responses = behavior(request, context)
            try:
                async for response in responses:
                    yield response
            finally:  # its clean-up runs now, not whenever the collector finds it
                await responses.aclose()

        return async_gen
    if inspect.iscoroutinefunction(behavior):

        async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request_streaming:
                request = _async_requests(request, context)
                context = _GuardedContext(context)
            elif isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await behavior(request, context)

        return coroutine

    def sync(request: Any, context: grpc.ServicerContext) -> Any:
        # a blocking method, run on a thread pool by whoever serves it: stay blocking
        if request_streaming:
            request = _sync_requests(request, context)
        elif isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return behavior(request, context)

    return sync


_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def guard_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same method, answering INVALID_ARGUMENT for requests that do not decode."""
    kind = next(k for k in _FACTORIES if getattr(handler, k, None) is not None)
    behavior = _guard_behavior(getattr(handler, kind), handler.request_streaming)
    return _FACTORIES[kind](
        behavior,
        request_deserializer=_guarded_decoder(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Interceptor form of :func:`guard_handler` for ``grpc.aio.server(interceptors=...)``
    (each method's guarded handler is made once, on its first call)."""

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        cached = self._guarded.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._guarded[method] = (handler, guard_handler(handler))
        return cached[1]
