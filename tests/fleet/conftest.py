"""A real Fleet gRPC server on loopback and real agents dialing it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))

from agent_helpers import make_key

from spikefleet.program.signing import SigningKey
from spikefleet.v1 import fleet_pb2_grpc
from spikefleet_agent.config import (
    AgentConfig,
    InferenceConfig,
    ServerConfig,
    TelemetryConfig,
)
from spikefleet_agent.daemon import Agent
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


@pytest.fixture
def signing_key(tmp_path: Path) -> SigningKey:
    return make_key(tmp_path / "keys")


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[FleetServer]:
    server = FleetServer(tmp_path / "server.sqlite").start()
    yield server
    server.stop()


@pytest.fixture
def start_agent(
    tmp_path: Path, signing_key: SigningKey, fleet_server: FleetServer
) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def start(agent_id: str = "edge-1", **labels: str) -> Agent:
        config = AgentConfig(
            agent_id=agent_id,
            state_dir=tmp_path / agent_id,
            lock_dir=tmp_path / "locks",
            trusted_keys=[tmp_path / "keys"],
            labels=labels,
            server=ServerConfig(
                address=fleet_server.address,
                heartbeat_interval_s=0.2,
                reconnect_min_s=0.05,
                reconnect_max_s=0.5,
            ),
            inference=InferenceConfig(address="127.0.0.1:0"),
            telemetry=TelemetryConfig(interval_s=3600),  # tests flush by hand
        ).validate()
        agent = Agent(config, pci_root=tmp_path / "no-sysfs").start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
