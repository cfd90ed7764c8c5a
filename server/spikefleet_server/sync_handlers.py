"""Blocking (sync) servicer methods on the grpc.aio server, run on a thread pool.

The converter, registry and rollouts servicers block on SQLite, the
conversion pool and condition variables, so they stay synchronous: each call
becomes a coroutine that runs the method on ``pool``. grpc.aio can do this by
itself (``migration_thread_pool``), but its sync context has no
``is_active()``, no ``code()``, never runs ``add_callback`` callbacks of
streaming calls, and its ``abort`` sends the status before the method has
unwound (its ``finally`` blocks may still be cleaning up when the caller hears
the error). :class:`SyncContext` keeps the sync stack's contract, so the
servicers run unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, NoReturn

import grpc
import structlog

log = structlog.get_logger(__name__)

_DONE = object()


class _Aborted(Exception):
    """Raised by :meth:`SyncContext.abort`; the status is sent once the method unwound."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[Any, ...]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, trailing


def is_async(behavior: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


class SyncContext:
    """A ``grpc.ServicerContext`` for a sync method, over the call's aio context."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._active = True
        self._callbacks: list[Callable[[], None]] = []

    def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> NoReturn:
        raise _Aborted(code, details, tuple(trailing_metadata))

    def is_active(self) -> bool:
        return self._active

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._callbacks.append(callback)
        return True

    def code(self) -> grpc.StatusCode | None:
        return self._context.code()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._context.set_trailing_metadata(metadata)

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def peer(self) -> str:
        return self._context.peer()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def finish(self) -> None:
        """The call ended (done, failed or cancelled): run the callbacks once."""
        if not self._active:
            return
        self._active = False
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                log.exception("rpc.callback_failed")


class _Requests:
    """The call's async request stream as a blocking iterator (for a pool thread)."""

    def __init__(self, requests: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._requests = requests.__aiter__()
        self._loop = loop

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        future = asyncio.run_coroutine_threadsafe(self._requests.__anext__(), self._loop)
        try:
            return future.result()
        except StopAsyncIteration:
            raise StopIteration from None


def _close_later(iterator: Any, pending: Future[Any] | None, pool: Executor) -> None:
    """Close a sync response generator once no pool thread is inside it."""
    close = getattr(iterator, "close", None)
    if close is None:
        return

    def run() -> None:
        try:
            close()
        except Exception:
            log.exception("rpc.close_failed")

    if pending is not None and not pending.done():
        pending.add_done_callback(lambda _: run())
    else:
        pool.submit(run)


def unary_response(
    behavior: Callable[..., Any], pool: Executor, request_streaming: bool
) -> Callable[..., Any]:
    """unary-unary or stream-unary: one pool thread runs the method to its return."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        loop = asyncio.get_running_loop()
        sync = SyncContext(context)
        if request_streaming:
            request = _Requests(request, loop)
        try:
            run = contextvars.copy_context().run  # request id and caller, for the method's logs
            return await asyncio.wrap_future(pool.submit(run, behavior, request, sync))
        except _Aborted as aborted:
            await context.abort(aborted.code, aborted.details, aborted.trailing)
        finally:
            sync.finish()

    return call


def stream_response(
    behavior: Callable[..., Any], pool: Executor, request_streaming: bool
) -> Callable[..., Any]:
    """unary-stream or stream-stream: every ``next()`` of the method's iterator runs
    on the pool, and the loop writes each response."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        sync = SyncContext(context)
        if request_streaming:
            request = _Requests(request, loop)
        pending: Future[Any] | None = None
        iterator: Any = None
        run = contextvars.copy_context().run
        try:
            pending = pool.submit(run, lambda: iter(behavior(request, sync)))
            iterator = await asyncio.wrap_future(pending)
            while True:
                pending = pool.submit(run, lambda: next(iterator, _DONE))
                item = await asyncio.wrap_future(pending)
                if item is _DONE:
                    return
                yield item
        except _Aborted as aborted:
            await context.abort(aborted.code, aborted.details, aborted.trailing)
        finally:
            sync.finish()
            if iterator is not None:
                _close_later(iterator, pending, pool)

    return call
