"""Every call gets a request id, one log line and a metric, from one server interceptor.

The request id is the caller's ``x-request-id`` or a new one; it is bound into
structlog's context for the call (so the method's own logs carry it) and sent
back in the trailing metadata. This interceptor runs outermost, so calls the
auth interceptor refuses are logged and counted too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog

from spikefleet_server.rpc import AroundInterceptor, metadata_value

log = structlog.get_logger("spikefleet_server.rpc")

QUIET_PREFIXES = ("/grpc.health.v1.Health/",)
"""Calls logged at debug level when they succeed (probes every few seconds)."""

CallObserver = Callable[[str, str, float], None]
"""(method, status code name, seconds) after every call, for metrics."""


class ObservabilityInterceptor(AroundInterceptor):
    def __init__(self, observer: CallObserver | None = None) -> None:
        super().__init__()
        self.observer = observer

    @asynccontextmanager
    async def around(
        self, method: str, metadata: tuple[tuple[str, Any], ...], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        request_id = metadata_value(metadata, "x-request-id") or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        context.set_trailing_metadata((("x-request-id", request_id),))
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds = time.perf_counter() - started
            if isinstance(error, asyncio.CancelledError):
                status = "CANCELLED"
            else:
                code = context.code()
                status = getattr(code, "name", None) or ("UNKNOWN" if error is not None else "OK")
            quiet = method.startswith(QUIET_PREFIXES) and status == "OK"
            (log.debug if quiet else log.info)("rpc.done", code=status, seconds=round(seconds, 4))
            if self.observer is not None:
                self.observer(method, status, seconds)
            structlog.contextvars.clear_contextvars()
