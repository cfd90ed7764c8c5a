"""Bearer tokens with roles, checked for every call by one server interceptor.

``viewer < deployer < admin`` is a ladder; ``agent`` (edge agents) stands
apart, so an agent token can do only what agents do. The interceptor also
gives each call a request id (``x-request-id`` from the caller, or a new one),
binds it and the caller into structlog's context, logs the call and counts it.
A method missing from the access table is refused: new services must say who
may call them (see :meth:`spikefleet_server.app.ServerApp.add_service`).
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from spikefleet.errors import ServerConfigError

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


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "spikefleet_principal", default=None
)


def current_principal() -> Principal | None:
    """Who is calling, inside a handler (None for public methods called without a token)."""
    return _principal.get()


class TokenTable:
    """Token sha256 -> Principal; compared in constant time."""

    def __init__(self, entries: Iterable[tuple[str, Role, str]]) -> None:
        self._entries = [
            (bytes.fromhex(digest), Principal(name, role)) for name, role, digest in entries
        ]

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


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        tokens: TokenTable,
        access: Mapping[str, Access],
        observer: CallObserver | None = None,
    ) -> None:
        self.tokens = tokens
        self.access = access  # read at call time, so services added later are covered
        self.observer = observer

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        metadata = tuple(details.invocation_metadata or ())
        return _wrap(
            handler,
            lambda behavior, streaming: self._guard(method, metadata, behavior, streaming),
        )

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

    def _guard(
        self,
        method: str,
        metadata: tuple[tuple[str, Any], ...],
        behavior: Callable[..., Any],
        streaming: bool,
    ) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            request_id = _metadata_value(metadata, "x-request-id") or uuid.uuid4().hex
            code, message, principal = self._check(method, metadata)
            _principal.set(principal)
            structlog.contextvars.bind_contextvars(
                request_id=request_id,
                method=method,
                caller=principal.name if principal else None,
            )
            started = time.perf_counter()
            failed = False
            context.set_trailing_metadata((("x-request-id", request_id),))
            try:
                if code is not None:
                    log.warning("rpc.refused", code=code.name, reason=message)
                    context.abort(code, message)
                if streaming:
                    yield from behavior(request, context)
                    return None
                return behavior(request, context)
            except GeneratorExit:
                failed = True
                raise
            except Exception:
                failed = True
                raise
            finally:
                seconds = time.perf_counter() - started
                set_code = context.code() if hasattr(context, "code") else None
                status = getattr(set_code, "name", None) or ("UNKNOWN" if failed else "OK")
                quiet = method.startswith(QUIET_PREFIXES) and status == "OK"
                (log.debug if quiet else log.info)(
                    "rpc.done", code=status, seconds=round(seconds, 4)
                )
                if self.observer is not None:
                    self.observer(method, status, seconds)
                structlog.contextvars.clear_contextvars()
                _principal.set(None)

        return run


def _wrap(handler: Any, guard: Callable[[Callable[..., Any], bool], Callable[..., Any]]) -> Any:
    """The same handler with its behavior wrapped by ``guard`` (which is a generator
    function; unary responses are taken from the generator's return value)."""

    def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        guarded = guard(behavior, False)

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            gen = guarded(request, context)
            try:
                while True:
                    next(gen)
            except StopIteration as done:
                return done.value

        return call

    def stream_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        return guard(behavior, True)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kwargs)
