"""A real Fleet gRPC server on loopback and real agents dialing it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fleet_helpers import FleetServer
from support.agent import make_key

from spikefleet.program.signing import SigningKey
from spikefleet_agent.config import (
    AgentConfig,
    InferenceConfig,
    ServerConfig,
    TelemetryConfig,
)
from spikefleet_agent.daemon import Agent


@pytest.fixture
def signing_key(tmp_path: Path) -> SigningKey:
    return make_key(tmp_path / "keys")


@pytest.fixture
def fleet_server(database_target: str | Path) -> Iterator[FleetServer]:
    """A Fleet server on SQLite, then on PostgreSQL (the tests using it run on both)."""
    server = FleetServer(database_target).start()
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
            lock_dir=tmp_path / f"{agent_id}-locks",
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
