"""Fixtures: a real spikefleet-server on loopback and lightweight agents dialing it over gRPC."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_helpers import AGENT_METADATA, client, put_programs, running_app

from spikefleet.client.rollouts import RolloutsClient
from spikefleet_server.rollouts.simagents import Behaviour, SimAgent


@dataclass
class Server:
    port: int
    programs: dict[str, str]  # name -> sha256

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def old(self) -> str:
        return self.programs["old"]

    @property
    def new(self) -> str:
        return self.programs["new"]

    @property
    def bad(self) -> str:
        return self.programs["bad"]

    def client(self, role: str = "deployer") -> RolloutsClient:
        return client(self.port, role)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_app(tmp_path / "server") as app:
        yield Server(app.port, put_programs(app, {"old": 1, "new": 2, "bad": 3}))


class Agents:
    """Starts SimAgents against an address and stops them all at the end."""

    def __init__(self) -> None:
        self.started: list[SimAgent] = []

    def start(
        self,
        server: Server,
        count: int,
        *,
        prefix: str = "edge",
        labels: dict[str, str] | None = None,
        program: str | None = None,
        behaviour: Behaviour | None = None,
    ) -> list[SimAgent]:
        agents = [
            SimAgent(
                grpc.insecure_channel(server.address),
                f"{prefix}-{i:02d}",
                labels=labels or {"site": "lab"},
                program_sha256=server.old if program is None else program,
                behaviour=behaviour or Behaviour(frames_per_batch=50),
                heartbeat_s=0.1,
                telemetry_s=0.1,
                metadata=AGENT_METADATA,
            )
            for i in range(count)
        ]
        for agent in agents:
            agent.start()
            self.started.append(agent)
        for agent in agents:
            assert agent.registered.wait(30), f"{agent.agent_id} did not register"
        return agents

    def stop(self) -> None:
        for agent in self.started:
            agent.stop()


@pytest.fixture
def agents() -> Iterator[Agents]:
    pool = Agents()
    yield pool
    pool.stop()
