"""The spikefleet-server process, composable: core services plus area extensions.

``ServerApp(config)`` opens the data dir (the database ``spikefleet.db``, its
schema upgraded by :mod:`spikefleet_server.storage.migrations`, the program
store, the signing key), builds the converter and
registry services, health, reflection and metrics, and serves them behind the
auth interceptor. Another area (fleet control, rollouts) joins with a module
that has ``install(app: ServerApp) -> None``, listed in
:data:`spikefleet_server.config.DEFAULT_EXTENSIONS` (the ``extensions`` setting overrides the list;
``spikefleet-server serve`` installs them in order); ``install`` may:

- use its tables (declared in :mod:`spikefleet_server.storage.schema`, created by a
  migration) through ``app.db.read()`` / ``app.db.write()``;
- serve programs and describe them: ``app.registry.get_bytes(sha256)``,
  ``app.registry.describe(ref)``;
- guard deletes: ``app.registry.usage = fn`` where ``fn(conn, sha256)`` returns the
  agents that run or are assigned that program (inside the delete's transaction);
- add a servicer with who may call each method::

      app.add_service(
          "spikefleet.v1.Fleet",
          lambda server: fleet_pb2_grpc.add_FleetServicer_to_server(servicer, server),
          {"Connect": Role.AGENT, "FetchProgram": frozenset({Role.AGENT, Role.VIEWER})},
      )

- end its long-lived streams when the server starts draining:
  ``app.on_drain.append(fn)`` (``fn`` runs on the server's event loop, so it must not block);
- run code at stop: ``app.on_stop.append(fn)``.

The server is ``grpc.aio``: it runs on an event loop in its own thread
(:class:`~spikefleet_server.loop_thread.LoopThread`), so one connected agent is a
coroutine, not a thread. Servicers may be async (the fleet's Connect) or sync
(they run on the ``grpc_threads`` pool, see :mod:`spikefleet_server.sync_handlers`).

Everything must be installed before :meth:`ServerApp.start`.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from spikefleet.errors import ServerConfigError
from spikefleet.v1 import converter_pb2_grpc, registry_pb2_grpc
from spikefleet.wire_guard import DecodeGuard
from spikefleet_server.auth import Access, AuthInterceptor, Principal, Role, TokenTable
from spikefleet_server.config import ServerConfig
from spikefleet_server.conversion import ConversionPool
from spikefleet_server.keys import load_or_create, published
from spikefleet_server.loop_thread import LoopThread
from spikefleet_server.metrics import Metrics
from spikefleet_server.registry import Registry
from spikefleet_server.services.converter import ConverterServicer
from spikefleet_server.services.registry import RegistryServicer
from spikefleet_server.storage import Database, check_schema, upgrade

log = structlog.get_logger("spikefleet_server.app")


CONVERTER = "spikefleet.v1.ConverterService"
REGISTRY = "spikefleet.v1.RegistryService"

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
    def __init__(self, config: ServerConfig, *, extensions: Sequence[str] = ()) -> None:
        self.config = config
        self.metrics = Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.data_dir / "spikefleet.db")
        if config.db_upgrade:
            before, after = upgrade(self.db)
            if before != after:
                log.info(
                    "app.schema_upgraded", database=self.db.describe(), before=before, after=after
                )
        else:
            check_schema(self.db)
        self.signing_key = load_or_create(config.signing_key_path)
        self.registry = Registry(config.data_dir / "programs", self.db, self.signing_key)
        self.metrics.watch_registry(self.registry.stats)
        self.access: dict[str, Access] = {}
        self.on_drain: list[Callable[[], None]] = []
        self.on_stop: list[Callable[[], None]] = []
        self._services: list[tuple[str, Callable[[grpc.aio.Server], None]]] = []
        self.server: grpc.aio.Server | None = None
        self.loop = LoopThread("grpc-aio")
        self.rpc_pool = ThreadPoolExecutor(config.grpc_threads, thread_name_prefix="rpc")
        self._terminated = threading.Event()
        self.port = 0
        self.metrics_port = 0
        self._metrics_server: Any = None
        self.health_port = 0
        self._health_server: grpc.aio.Server | None = None
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
        self.health = health.aio.HealthServicer()
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
        self._grant(health.SERVICE_NAME, CORE_ACCESS[health.SERVICE_NAME])
        for name in (reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"):
            self._grant(name, CORE_ACCESS[name])
        for module_name in extensions:
            self._install(module_name)

    def _install(self, module_name: str) -> None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            log.info("app.extension_absent", extension=module_name)
            return
        install = getattr(module, "install", None)
        if install is None:
            log.info("app.extension_without_install", extension=module_name)
            return
        install(self)
        log.info("app.extension_installed", extension=module_name)

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
        """Serve a servicer; ``access`` maps each method name to who may call it
        (methods left out are refused for everyone)."""
        if self.server is not None:
            raise RuntimeError("add_service after start(): install extensions first")
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

    def start(self) -> int:
        """Bind and serve; returns the gRPC port (useful with port 0)."""
        return self.loop.run(self._start())

    async def _start(self) -> int:
        config = self.config
        tokens = TokenTable((Principal(t.name, t.role, t.agents), t.sha256) for t in config.tokens)
        interceptor = AuthInterceptor(
            tokens, self.access, self.metrics.observe_rpc, pool=self.rpc_pool
        )
        # the decode guard innermost: a caller is authenticated before its bytes are judged
        server = grpc.aio.server(
            interceptors=[interceptor, DecodeGuard()], options=config.grpc_options()
        )
        for _name, add in self._services:
            add(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [name for name, _ in self._services]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        credentials = self._credentials()
        try:
            if credentials is None:
                port = server.add_insecure_port(config.listen)
            else:
                port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as exc:
            raise ServerConfigError(f"cannot listen on {config.listen}: {exc}") from None
        if port == 0:
            raise ServerConfigError(f"cannot listen on {config.listen} (in use or not local)")
        await server.start()
        self.server, self.port = server, port
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
            tls=credentials is not None,
            mtls=config.tls.client_ca is not None,
            metrics_port=self.metrics_port or None,
            health_port=self.health_port or None,
            key_id=self.signing_key.key_id,
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

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, end the agents' streams, let in-flight calls finish for up to
        ``grace`` seconds, close."""
        if self.server is not None:
            self.loop.run(self._drain(self.server, grace))
            self.server = None
        for hook in self.on_stop:
            hook()
        self.loop.close()
        self.rpc_pool.shutdown(wait=True, cancel_futures=True)
        self.pool.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        self.db.close()
        self._terminated.set()
        log.info("app.stopped")

    async def _drain(self, server: grpc.aio.Server, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        log.info("app.draining", grace=grace)
        stopping = asyncio.ensure_future(server.stop(grace))
        await asyncio.sleep(0)  # the server refuses new calls from here on
        for hook in self.on_drain:
            try:
                hook()
            except Exception:
                log.exception("app.drain_hook_failed")
        await stopping
        if self._health_server is not None:
            await self._health_server.stop(None)
            self._health_server = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` finished (True) or ``timeout`` passed (False)."""
        return self._terminated.wait(timeout)

    def __enter__(self) -> ServerApp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=self.config.drain_seconds)
