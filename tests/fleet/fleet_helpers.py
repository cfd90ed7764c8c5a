"""A real Fleet gRPC server on loopback, and waiting for what agents do."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from support.aio import Blocking, LoopThread

from spikefleet.v1 import fleet_pb2_grpc
from spikefleet.wire_guard import DecodeGuard
from spikefleet_server.fleet import FleetService, FleetStore, TelemetryLimits
from spikefleet_server.fleet.storm import DEFAULT_POLICY, StormPolicy
from spikefleet_server.replicas import libpq_url
from spikefleet_server.storage import Database, open_database
from spikefleet_server.telemetry import TelemetryStore

T = TypeVar("T")


@dataclass
class FleetServer:
    db: Path | str  # a SQLite file or a PostgreSQL URL (see support.backends)
    programs: dict[str, bytes] = field(default_factory=dict)
    port: int = 0
    tls: tuple[bytes, bytes] | None = None  # (certificate PEM, key PEM)
    limits: TelemetryLimits | None = None
    prune_interval_s: float = 60.0
    store_factory: Callable[[Database], FleetStore] = FleetStore
    storm: StormPolicy | None = DEFAULT_POLICY
    heartbeat_interval_ms: int = 200
    # False: Registered does not say it, as servers before it did (older-server tests)
    telemetry_counts_as_heartbeat: bool = True
    service: FleetService | None = None
    _server: grpc.aio.Server | None = None
    _db: Database | None = None
    _loop: LoopThread | None = None

    def start(self) -> FleetServer:
        self._db = open_database(self.db)
        store = self.store_factory(self._db)

        async def program(sha256: str) -> bytes:
            return self.programs[sha256]

        self.service = FleetService(
            store,
            TelemetryStore(self._db),
            program,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            limits=self.limits,
            prune_interval_s=self.prune_interval_s,
            storm=self.storm,
            telemetry_counts_as_heartbeat=self.telemetry_counts_as_heartbeat,
        )
        self._loop = LoopThread("fleet-test")
        self._loop.run(self._start(self.service))
        return self

    async def _start(self, service: FleetService) -> None:
        await service.start()
        server = grpc.aio.server(interceptors=[DecodeGuard()])
        fleet_pb2_grpc.add_FleetServicer_to_server(service, server)
        if self.tls is None:
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        else:
            cert, key = self.tls
            credentials = grpc.ssl_server_credentials([(key, cert)])
            self.port = server.add_secure_port(f"127.0.0.1:{self.port}", credentials)
        await server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None and self._loop is not None:
            self._loop.run(self._server.stop(grace=None))
            self._server = None
        if self.service is not None and self._loop is not None:
            self._loop.run(self.service.close())
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def writes_held(self) -> Iterator[None]:
        """Another client holds the database's write lock (SQLite: ``BEGIN IMMEDIATE``;
        PostgreSQL: the fleet tables locked against writes) until the block ends."""
        if isinstance(self.db, Path):
            blocker = sqlite3.connect(self.db, isolation_level=None, timeout=30)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            return
        with psycopg.connect(libpq_url(self.db)) as conn:  # a transaction until the end
            conn.execute("LOCK TABLE fleet_agents, fleet_telemetry IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.rollback()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (where the service's state lives)."""
        assert self._loop is not None, "server is stopped"
        return self._loop.run(coro)

    @property
    def fleet(self) -> Any:
        """The FleetService, its coroutines run to their result on the server's loop."""
        assert self.service is not None and self._loop is not None, "server is stopped"
        return Blocking(self.service, self._loop.run)


def self_signed_loopback_cert() -> tuple[bytes, bytes]:
    """(certificate, key) PEM for 127.0.0.1; the certificate is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spikefleet fleet test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
