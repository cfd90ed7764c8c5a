"""Bearer tokens with roles, checked for every call by one server interceptor.

``viewer < deployer < admin`` is a ladder; ``agent`` (edge agents) stands
apart, so an agent token can do only what agents do. The interceptor also
gives each call a request id (``x-request-id`` from the caller, or a new one),
binds it and the caller into structlog's context, logs the call and counts it.
A method missing from the access table is refused: new services must say who
may call them (see :meth:`spikefleet_server.app.ServerApp.add_service`).
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import fnmatch
import hashlib
import hmac
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from spikefleet.errors import ServerConfigError
from spikefleet_server import sync_handlers

log = structlog.get_logger("spikefleet_server.rpc")


class Role(enum.Enum):
    VIEWER = "viewer"
    DEPLOYER = "deployer"
    ADMIN = "admin"
    AGENT = "agent"

    @classmethod
    def parse(cls, text: object) -> Role:
        try:
            return cls(str(text).lower())
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ServerConfigError(f"unknown role {text!r}: use one of {names}") from None


_LADDER = {Role.VIEWER: 1, Role.DEPLOYER: 2, Role.ADMIN: 3}

Access = Role | frozenset[Role] | None
"""Who may call a method: a minimum role, any of a set of roles, or None (public)."""

PUBLIC: Access = None


def allows(access: Access, role: Role) -> bool:
    if access is None:
        return True
    wanted = access if isinstance(access, frozenset) else frozenset({access})
    for need in wanted:
        if need is Role.AGENT and role is Role.AGENT:
            return True
        if need in _LADDER and role in _LADDER and _LADDER[role] >= _LADDER[need]:
            return True
    return False


def describe_access(access: Access) -> str:
    if access is None:
        return "anyone"
    wanted = access if isinstance(access, frozenset) else frozenset({access})
    return " or ".join(
        f"{r.value}" if r is Role.AGENT else f"{r.value} or higher"
        for r in sorted(wanted, key=lambda r: r.value)
    )


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    agents: tuple[str, ...] = ()  # for agent tokens: the ids it may register as; () = any

    def may_register_as(self, agent_id: str) -> bool:
        """Whether this caller may hold the control stream of ``agent_id``."""
        if self.role is not Role.AGENT:
            return False
        return not self.agents or any(fnmatch.fnmatchcase(agent_id, p) for p in self.agents)


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "spikefleet_principal", default=None
)


def current_principal() -> Principal | None:
    """Who is calling, inside a handler (None for public methods called without a token)."""
    return _principal.get()


class TokenTable:
    """Token sha256 -> Principal; compared in constant time."""

    def __init__(self, entries: Iterable[tuple[Principal, str]]) -> None:
        """``entries``: (principal, hex sha256 of its token)."""
        self._entries = [(bytes.fromhex(digest), principal) for principal, digest in entries]

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for candidate, principal in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found


def _bearer(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _metadata_value(metadata: Iterable[tuple[str, Any]], name: str) -> str | None:
    for key, value in metadata:
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


QUIET_PREFIXES = ("/grpc.health.v1.Health/",)
"""Calls logged at debug level when they succeed (probes every few seconds)."""

CallObserver = Callable[[str, str, float], None]
"""(method, status code name, seconds) after every call, for metrics."""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks, logs and counts every call on the grpc.aio server; sync servicer methods
    are run on ``pool`` (see :mod:`spikefleet_server.sync_handlers`)."""

    def __init__(
        self,
        tokens: TokenTable,
        access: Mapping[str, Access],
        observer: CallObserver | None = None,
        *,
        pool: Executor,
    ) -> None:
        self.tokens = tokens
        self.access = access  # read at call time, so services added later are covered
        self.observer = observer
        self.pool = pool

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        metadata = tuple(details.invocation_metadata or ())
        return self._wrap(handler, method, metadata)

    def _check(
        self, method: str, metadata: tuple[tuple[str, Any], ...]
    ) -> tuple[grpc.StatusCode | None, str, Principal | None]:
        if method not in self.access:
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} is not open to any role", None
        access = self.access[method]
        token = _bearer(metadata)
        principal = self.tokens.lookup(token) if token else None
        if access is None:
            return None, "", principal
        if token is None:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token: pass --token or SPIKEFLEET_TOKEN "
                "(metadata 'authorization: Bearer <token>')",
                None,
            )
        if principal is None:
            return grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token (unknown token)", None
        if not allows(access, principal.role):
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs role {describe_access(access)}; token {principal.name!r} "
                f"has role {principal.role.value}",
                principal,
            )
        return None, "", principal

    def _wrap(self, handler: Any, method: str, metadata: tuple[tuple[str, Any], ...]) -> Any:
        kind = next(k for k in _FACTORIES if getattr(handler, k) is not None)
        behavior = getattr(handler, kind)
        request_streaming, response_streaming = kind.startswith("stream"), kind.endswith("stream")
        if not sync_handlers.is_async(behavior):
            bridges = (sync_handlers.unary_response, sync_handlers.stream_response)
            behavior = bridges[response_streaming](behavior, self.pool, request_streaming)
        call = _Call(self, method, metadata)
        guard = _guard_stream if response_streaming else _guard_unary
        guarded = guard(call, behavior)
        return _FACTORIES[kind](
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _Call:
    """One call's request id, caller and timing: set up before the method, logged after."""

    def __init__(
        self, interceptor: AuthInterceptor, method: str, metadata: tuple[tuple[str, Any], ...]
    ) -> None:
        self.interceptor = interceptor
        self.method = method
        self.metadata = metadata
        self.started = 0.0

    async def begin(self, context: grpc.aio.ServicerContext) -> None:
        """Bind the call's context; aborts the call if the caller may not make it."""
        request_id = _metadata_value(self.metadata, "x-request-id") or uuid.uuid4().hex
        code, message, principal = self.interceptor._check(self.method, self.metadata)
        _principal.set(principal)
        structlog.contextvars.bind_contextvars(
            request_id=request_id,
            method=self.method,
            caller=principal.name if principal else None,
        )
        self.started = time.perf_counter()
        context.set_trailing_metadata((("x-request-id", request_id),))
        if code is not None:
            log.warning("rpc.refused", code=code.name, reason=message)
            await context.abort(code, message)

    def end(self, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self.started
        if isinstance(error, asyncio.CancelledError):
            status = "CANCELLED"
        else:
            code = context.code()
            status = getattr(code, "name", None) or ("UNKNOWN" if error is not None else "OK")
        quiet = self.method.startswith(QUIET_PREFIXES) and status == "OK"
        (log.debug if quiet else log.info)("rpc.done", code=status, seconds=round(seconds, 4))
        if self.interceptor.observer is not None:
            self.interceptor.observer(self.method, status, seconds)
        structlog.contextvars.clear_contextvars()
        _principal.set(None)


def _guard_unary(call: _Call, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        error: BaseException | None = None
        try:
            await call.begin(context)
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.end(context, error)

    return run


def _guard_stream(call: _Call, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def run(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        error: BaseException | None = None
        try:
            await call.begin(context)
            if inspect.iscoroutinefunction(behavior):  # the reader/writer API
                await behavior(request, context)
            else:
                async for response in behavior(request, context):
                    yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.end(context, error)

    return run


_FACTORIES: dict[str, Callable[..., Any]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}
