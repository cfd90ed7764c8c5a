"""Wrapping a grpc.aio method handler, so an interceptor can run code around every call.

Both interceptors (:mod:`spikefleet_server.auth` and
:mod:`spikefleet_server.observability`) use :func:`wrap_handler`: it keeps the
handler's kind and (de)serializers and runs the method inside an async context
manager made for that call, whose exit sees how the call ended. Every servicer
method must be a coroutine (or async generator): the server has one event loop
and no thread pool for RPCs. A method raising :class:`Refusal` ends its call with that
status once it has unwound.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]
"""Given a call's context, the async context manager its method runs in."""

_FACTORIES: dict[str, Callable[..., Any]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class Refusal(Exception):
    """Raised by a servicer method to end its call with ``code``: unlike
    ``context.abort`` (which sends the status at once), the caller hears it only after
    the method has unwound, its ``finally`` blocks (clean-up) included."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


def is_async(behavior: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def wrap_handler(handler: Any, method: str, around: Around) -> Any:
    """``handler`` with its method run inside ``around(context)``."""
    kind = next(k for k in _FACTORIES if getattr(handler, k) is not None)
    behavior = getattr(handler, kind)
    if not is_async(behavior):
        raise TypeError(f"{method} is not async: servicer methods must be coroutines")
    if kind.endswith("stream"):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(context):
                try:
                    if inspect.iscoroutinefunction(behavior):  # the reader/writer API
                        await behavior(request, context)
                    else:
                        async for response in behavior(request, context):
                            yield response
                except Refusal as refusal:
                    await context.abort(refusal.code, refusal.details)

        run: Callable[..., Any] = stream
    else:

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context):
                try:
                    return await behavior(request, context)
                except Refusal as refusal:
                    await context.abort(refusal.code, refusal.details)

        run = unary
    return _FACTORIES[kind](
        run,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AroundInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that runs every call's method inside ``around``.

    The wrapped handler is made once per method and reused by every call (the call's
    metadata is read from its context): wrapping anew per call cost every Register of a
    reconnecting fleet the inspection and closures again."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (handler, wrapped)

    def around(
        self, method: str, metadata: tuple[tuple[str, Any], ...], context: grpc.aio.ServicerContext
    ) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]

        def around(context: grpc.aio.ServicerContext) -> AbstractAsyncContextManager[None]:
            return self.around(method, tuple(context.invocation_metadata() or ()), context)

        wrapped = wrap_handler(handler, method, around)
        self._wrapped[method] = (handler, wrapped)  # one per method the server has
        return wrapped


def metadata_value(metadata: tuple[tuple[str, Any], ...], name: str) -> str | None:
    for key, value in metadata:
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
