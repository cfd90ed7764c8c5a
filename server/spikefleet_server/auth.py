"""Bearer tokens with roles, checked for every call by one server interceptor.

``viewer < deployer < admin`` is a ladder; ``agent`` (edge agents) stands
apart, so an agent token can do only what agents do. :class:`AuthInterceptor`
only decides who may call what: it binds the caller for the method
(:func:`current_principal`, and ``caller`` in structlog's context) and refuses
the rest. Request ids, logs and metrics are :mod:`spikefleet_server.observability`'s.
A method missing from the access table is refused: new services must say who
may call them (see :meth:`spikefleet_server.app.ServerApp.add_service`).
"""

from __future__ import annotations

import contextvars
import enum
import fnmatch
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from spikefleet.errors import ServerConfigError
from spikefleet_server.rpc import AroundInterceptor

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


class AuthInterceptor(AroundInterceptor):
    """Lets each call through only if the access table allows its caller."""

    def __init__(self, tokens: TokenTable, access: Mapping[str, Access]) -> None:
        super().__init__()
        self.tokens = tokens
        self.access = access  # read at call time, so services added later are covered

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
                "missing bearer token: send metadata 'authorization: Bearer <token>' "
                "(Client(token=...))",
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

    @asynccontextmanager
    async def around(
        self, method: str, metadata: tuple[tuple[str, Any], ...], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        code, message, principal = self._check(method, metadata)
        _principal.set(principal)
        structlog.contextvars.bind_contextvars(caller=principal.name if principal else None)
        try:
            if code is not None:
                log.warning("rpc.refused", code=code.name, reason=message)
                await context.abort(code, message)
            yield
        finally:
            _principal.set(None)
