"""A real Fleet gRPC server on loopback, and waiting for what agents do."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from spikefleet.v1 import fleet_pb2_grpc
from spikefleet_server.db import Database
from spikefleet_server.fleet import FleetService, FleetStore


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()`` holds; ``timeout`` bounds a hang, it is not a speed goal."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


@dataclass
class FleetServer:
    db: Path
    programs: dict[str, bytes] = field(default_factory=dict)
    port: int = 0
    service: FleetService | None = None
    _server: grpc.Server | None = None
    _db: Database | None = None

    def start(self) -> FleetServer:
        self._db = Database(self.db)
        store = FleetStore(self._db)
        self.service = FleetService(store, self.programs.__getitem__, heartbeat_interval_ms=200)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        fleet_pb2_grpc.add_FleetServicer_to_server(self.service, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        if self.service is not None:
            self.service.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def fleet(self) -> FleetService:
        assert self.service is not None, "server is stopped"
        return self.service
