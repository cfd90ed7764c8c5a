"""The spikefleet-server process, wired in one place.

``ServerApp(config)`` builds every part as a typed attribute, in the order they
depend on each other:

- ``db``: the database (:mod:`spikefleet_server.storage`), its schema upgraded
  (or checked, with ``db_upgrade = false``);
- ``registry``: signed programs (files) with their metadata in ``db``;
- ``converter``: the Convert servicer over the conversion worker ``pool``;
- ``fleet``: agents' control streams, assignments, installs and telemetry ingest
  (:class:`~spikefleet_server.fleet.FleetService`); it guards the registry's
  deletes (a program agents run or are assigned is not deleted);
- ``rollouts``: the rollout controller
  (:class:`~spikefleet_server.rollouts.RolloutController`), woken by the fleet's
  events.

``config.extensions`` says which of the fleet and rollouts services are served
(both by default). Everything runs on one asyncio event loop: :meth:`start` and
:meth:`stop` are coroutines (``spikefleet-server serve`` runs them under
``asyncio.run``), every servicer method is async, and blocking work happens on
the storage threads or in the conversion worker processes. Calls pass three
interceptors: observability (request id, log line, metrics) outermost, then
authentication (:mod:`spikefleet_server.auth`), then the decode guard (bytes that
are not the method's message are INVALID_ARGUMENT).

Another service can join before :meth:`start` with :meth:`add_service`, saying
who may call each method.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from spikefleet.errors import RolloutSpecError, ServerConfigError, SpikefleetError
from spikefleet.v1 import (
    converter_pb2_grpc,
    fleet_pb2_grpc,
    registry_pb2_grpc,
    rollout_pb2_grpc,
    telemetry_pb2_grpc,
)
from spikefleet.wire_guard import DecodeGuard
from spikefleet_server import replicas
from spikefleet_server.auth import Access, AuthInterceptor, Principal, Role, TokenTable
from spikefleet_server.config import FLEET, ROLLOUTS, ServerConfig
from spikefleet_server.conversion import ConversionPool
from spikefleet_server.fleet import (
    FLEET_ACCESS,
    FLEET_ADMIN_ACCESS,
    FleetAdminService,
    FleetMetrics,
    FleetService,
    FleetStore,
    TelemetryLimits,
)
from spikefleet_server.fleet.query import ROLES as TELEMETRY_QUERY_ACCESS
from spikefleet_server.fleet.query import SERVICE_NAME as TELEMETRY_QUERY_SERVICE
from spikefleet_server.fleet.query import TelemetryQueryService
from spikefleet_server.keys import load_or_create, published
from spikefleet_server.metrics import Metrics
from spikefleet_server.observability import ObservabilityInterceptor
from spikefleet_server.registry import Registry
from spikefleet_server.replicas import Coordination, Replicas
from spikefleet_server.rollouts import (
    ROLES as ROLLOUT_ACCESS,
)
from spikefleet_server.rollouts import (
    FleetAdapter,
    RolloutController,
    RolloutsServicer,
    RolloutStore,
)
from spikefleet_server.services.converter import ConverterServicer
from spikefleet_server.services.registry import RegistryServicer
from spikefleet_server.storage import open_database
from spikefleet_server.telemetry import TelemetryStore

log = structlog.get_logger("spikefleet_server.app")

# The storage threads' work is mostly Python (SQLAlchemy, the driver) under the GIL:
# more threads do not run it faster, they take the GIL from the event loop (measured:
# 5,000 agents registered on two PostgreSQL replicas in 42 s with 4, 75 s with 16).
MAX_STORAGE_THREADS = 4

CONVERTER = "spikefleet.v1.ConverterService"
REGISTRY = "spikefleet.v1.RegistryService"
FLEET_SERVICE = "spikefleet.v1.Fleet"
FLEET_ADMIN_SERVICE = "spikefleet.v1.FleetAdmin"
ROLLOUTS_SERVICE = "spikefleet.v1.Rollouts"

CORE_ACCESS: dict[str, Mapping[str, Access]] = {
    CONVERTER: {"Convert": Role.DEPLOYER},
    REGISTRY: {
        "List": Role.VIEWER,
        "Describe": Role.VIEWER,
        "Get": frozenset({Role.VIEWER, Role.AGENT}),
        "Delete": Role.ADMIN,
        "TrustedKeys": frozenset({Role.VIEWER, Role.AGENT}),
    },
    health.SERVICE_NAME: {"Check": None, "Watch": None},
    reflection.SERVICE_NAME: {"ServerReflectionInfo": None},
    "grpc.reflection.v1.ServerReflection": {"ServerReflectionInfo": None},
}


class ServerApp:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(
            config.database_target,
            migrate=config.db_upgrade,
            threads=min(config.grpc_threads, MAX_STORAGE_THREADS),
        )
        try:
            self.signing_key = load_or_create(config.signing_key_path)
            self.registry = Registry(config.data_dir / "programs", self.db, self.signing_key)
        except BaseException:
            self.db.close()
            raise
        self.metrics.watch_registry(self.registry.stats)

        self.pool = ConversionPool(config.workers, config.log_level)
        uploads = config.data_dir / "uploads"
        shutil.rmtree(uploads, ignore_errors=True)  # what a crash mid-upload left
        self.converter = ConverterServicer(
            self.registry,
            self.pool,
            uploads,
            config.max_upload_bytes,
            self.metrics,
            config.convert_timeout_seconds or None,
        )

        # replicas on PostgreSQL tell each other of changes and share one rollout lease
        self.coordination: Coordination = (
            Replicas(str(config.database_target)) if config.replicated else Coordination()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        fleet_store = FleetStore(
            self.db,
            require_program=self.registry.require,
            replica_id=lambda: self.coordination.replica_id,
        )
        self.registry.usage = fleet_store.usage_in  # no deleting what agents run
        self.fleet = FleetService(
            fleet_store,
            TelemetryStore(self.db),
            self.registry.get_bytes,
            metrics=FleetMetrics.create(self.metrics.registry),
            limits=TelemetryLimits(
                max_batch_bytes=config.telemetry_max_batch_bytes,
                rate_bytes_per_s=config.telemetry_rate_bytes_per_s,
                retention_days=config.telemetry_retention_days,
                max_batches_per_agent=config.telemetry_max_batches_per_agent,
            ),
            replicated=config.replicated,
        )
        self.coordination.subscribe(replicas.ASSIGNMENTS, self._assigned_elsewhere)
        # a dead replica's agents are recorded disconnected by the others
        self.coordination.track_agents(fleet_store, self.fleet.reclaim)
        adapter = FleetAdapter(self.fleet)
        self.rollouts = RolloutController(
            RolloutStore(self.db),
            adapter,
            adapter,
            resolve_program=self._resolve_program,
            leader=self.coordination.is_leader,
            announce=self._announce_rollout if config.replicated else None,
        )
        # The rollout leader is woken by events, never by polling: requests made through
        # any replica (ROLLOUTS), what agents on any replica report (FLEET; the local
        # fleet's events too), winning the lease, and its own deadlines.
        self.coordination.subscribe(replicas.ROLLOUTS, self._rollout_elsewhere)
        self.coordination.subscribe(replicas.FLEET, self._fleet_elsewhere)
        self.coordination.on_leadership(lambda _held: self.rollouts.wake())
        self.fleet.subscribe(lambda event: self.rollouts.wake(event.agent_id, event.kind))

        self.servers: list[grpc.aio.Server] = []  # the listeners, all on one port
        self.port = 0
        self.metrics_port = 0
        self._metrics_server: Any = None
        self.health_port = 0
        self._health_server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.access: dict[str, Access] = {}
        self._services: list[tuple[str, Callable[[grpc.aio.Server], None]]] = []
        self.add_service(
            CONVERTER,
            lambda s: converter_pb2_grpc.add_ConverterServiceServicer_to_server(self.converter, s),
            CORE_ACCESS[CONVERTER],
        )
        registry_servicer = RegistryServicer(
            self.registry, lambda: published(self.signing_key, config.trusted_keys_dir)
        )
        self.add_service(
            REGISTRY,
            lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry_servicer, s),
            CORE_ACCESS[REGISTRY],
        )
        if FLEET in config.extensions:
            self.add_service(
                FLEET_SERVICE,
                lambda s: fleet_pb2_grpc.add_FleetServicer_to_server(self.fleet, s),
                FLEET_ACCESS,
            )
            admin = FleetAdminService(self.fleet)
            self.add_service(
                FLEET_ADMIN_SERVICE,
                lambda s: fleet_pb2_grpc.add_FleetAdminServicer_to_server(admin, s),
                FLEET_ADMIN_ACCESS,
            )
            query = TelemetryQueryService(self.fleet.telemetry)
            self.add_service(
                TELEMETRY_QUERY_SERVICE,
                lambda s: telemetry_pb2_grpc.add_TelemetryQueryServicer_to_server(query, s),
                TELEMETRY_QUERY_ACCESS,
            )
        if ROLLOUTS in config.extensions:
            servicer = RolloutsServicer(self.rollouts)
            self.add_service(
                ROLLOUTS_SERVICE,
                lambda s: rollout_pb2_grpc.add_RolloutsServicer_to_server(servicer, s),
                ROLLOUT_ACCESS,
            )
        self._grant(health.SERVICE_NAME, CORE_ACCESS[health.SERVICE_NAME])
        for name in (reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"):
            self._grant(name, CORE_ACCESS[name])

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _assigned_elsewhere(self, payload: str) -> None:
        """An assignment stored by some replica ("<agent id> <generation>"; "" = any)."""
        agent_id, _, generation = payload.partition(" ")
        self._spawn(self.fleet.assigned_elsewhere(agent_id, int(generation or 0)))

    def _rollout_elsewhere(self, payload: str) -> None:
        """A rollout created or changed by some replica ("<rollout id> <version>")."""
        rollout_id, _, version = payload.partition(" ")
        self.rollouts.changed_elsewhere(rollout_id, int(version or 0))

    def _fleet_elsewhere(self, payload: str) -> None:
        """A fleet event on some replica ("<kind> <agent id>[\\n<agent id>...]"; "" =
        anything may have happened): the rollouts watching those agents look again."""
        kind, agent_ids = replicas.fleet_news(payload)
        for agent_id in agent_ids:
            self.rollouts.wake(agent_id, kind)

    async def _announce_rollout(self, rollout_id: str, version: int) -> None:
        def send() -> None:
            with self.db.write() as conn:
                replicas.notify(conn, replicas.ROLLOUTS, f"{rollout_id} {version}")

        await self.db.run(send)

    async def _resolve_program(self, ref: str) -> str:
        """A rollout's program reference (sha256, unique prefix, or name = latest version)."""
        try:
            return (await self.registry.describe(ref)).sha256
        except SpikefleetError as exc:
            raise RolloutSpecError(f"cannot roll out {ref!r}: {exc}") from None

    def _grant(self, service: str, access: Mapping[str, Access]) -> None:
        for method, who in access.items():
            full = method if method.startswith("/") else f"/{service}/{method}"
            self.access[full] = who

    def add_service(
        self,
        service_name: str,
        add_to_server: Callable[[grpc.aio.Server], None],
        access: Mapping[str, Access],
    ) -> None:
        """Serve a servicer (async methods only); ``access`` maps each method name to who
        may call it (methods left out are refused for everyone)."""
        if self.servers:
            raise RuntimeError("add_service after start(): add services first")
        self._grant(service_name, access)
        self._services.append((service_name, add_to_server))

    def _credentials(self) -> grpc.ServerCredentials | None:
        tls = self.config.tls
        if tls.cert is None or tls.key is None:
            return None
        client_ca = tls.client_ca.read_bytes() if tls.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def _grpc_server(self, tokens: TokenTable) -> grpc.aio.Server:
        """One gRPC server with every service, health and reflection. Each listener gets
        its own interceptors: they keep each method's wrapped handler, and each server
        has handler objects of its own."""
        # observability outermost (refused calls are logged and counted too); the decode
        # guard innermost: a caller is authenticated before its bytes are judged
        server = grpc.aio.server(
            interceptors=[
                ObservabilityInterceptor(self.metrics.observe_rpc),
                AuthInterceptor(tokens, self.access),
                DecodeGuard(),
            ],
            options=self.config.grpc_options(),
        )
        for _name, add in self._services:
            add(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [name for name, _ in self._services]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        return server

    def _bind(
        self, servers: list[grpc.aio.Server], credentials: grpc.ServerCredentials | None
    ) -> int:
        """Bind every listener to the listen address: the first as configured (port 0:
        any free one), the others to the port it got (SO_REUSEPORT)."""
        listen = self.config.listen
        host, port = listen.rpartition(":")[0], 0
        for index, server in enumerate(servers):
            address = listen if index == 0 else f"{host}:{port}"
            try:
                if credentials is None:
                    bound = server.add_insecure_port(address)
                else:
                    bound = server.add_secure_port(address, credentials)
                problem = " (in use or not local)"
            except RuntimeError as exc:
                bound, problem = 0, f": {exc}"
            if index == 0:
                if bound == 0:
                    raise ServerConfigError(f"cannot listen on {listen}{problem}")
                port = bound
            elif bound != port:
                raise ServerConfigError(
                    f"cannot open listener {index + 1} of {len(servers)} on {address}{problem}: "
                    "this system may not let sockets share a port (SO_REUSEPORT); "
                    "set listeners = 1"
                )
        return port

    async def start(self) -> int:
        """Bind and serve on the running loop; returns the gRPC port (useful with port 0)."""
        config = self.config
        tokens = TokenTable((Principal(t.name, t.role, t.agents), t.sha256) for t in config.tokens)
        servers = [self._grpc_server(tokens) for _ in range(config.listeners)]
        credentials = self._credentials()
        port = self._bind(servers, credentials)
        names = [name for name, _ in self._services]
        await self.coordination.start()
        await self.fleet.start()
        if ROLLOUTS in config.extensions:
            await self.rollouts.start()
        self.servers, self.port = servers, port  # stop() ends any that started
        for server in servers:
            await server.start()
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if config.metrics_listen:
            self._metrics_server, self.metrics_port = self.metrics.serve(config.metrics_listen)
        if config.health_listen:
            self._health_server, self.health_port = await self._serve_health(config.health_listen)
        log.info(
            "app.serving",
            listen=config.listen,
            port=port,
            listeners=len(servers),
            tls=credentials is not None,
            mtls=config.tls.client_ca is not None,
            metrics_port=self.metrics_port or None,
            health_port=self.health_port or None,
            key_id=self.signing_key.key_id,
            database=self.db.describe(),
        )
        return port

    async def _serve_health(self, listen: str) -> tuple[grpc.aio.Server, int]:
        """The health service alone, in plaintext: probes see SERVING, then NOT_SERVING
        from the moment a drain starts, and nothing else is reachable there."""
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            port = server.add_insecure_port(listen)
        except RuntimeError as exc:
            raise ServerConfigError(f"cannot listen on {listen} (health_listen): {exc}") from None
        await server.start()
        return server, port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, end the agents' streams and rollout watches, let other
        in-flight calls finish for up to ``grace`` seconds, close everything."""
        if self.servers:
            await self.health.enter_graceful_shutdown()
            log.info("app.draining", grace=grace)
            stopping = asyncio.gather(*(server.stop(grace) for server in self.servers))
            await asyncio.sleep(0)  # every listener refuses new calls from here on
            self.fleet.drain()
            await self.rollouts.stop()
            await stopping
            self.servers = []
        await self.coordination.stop()  # the rollout lease goes to another replica now
        await self.rollouts.stop()
        await self.fleet.close()
        if self._health_server is not None:
            await self._health_server.stop(None)
            self._health_server = None
        await asyncio.to_thread(self.pool.shutdown)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        await asyncio.to_thread(self.db.close)
        log.info("app.stopped")
