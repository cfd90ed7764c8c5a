"""A real spikefleet-server (with the fleet and rollouts extensions) for rollout tests,
programs in its registry, tokens for every role, and waiting helpers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from support.server import TOKENS
from support.simagents import Behaviour, SimAgent

from spikefleet.client import Client
from spikefleet.client.rollouts import RolloutsClient, RolloutStatus
from spikefleet_server.config import hash_token

AGENT_METADATA = (("authorization", f"Bearer {TOKENS['agent']}"),)


def config_toml(data_dir: Path, listen: str) -> str:
    tokens = "".join(
        f'[[tokens]]\nname = "{role}-user"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
        for role, token in TOKENS.items()
    )
    return (
        f'listen = "{listen}"\ndata_dir = "{data_dir}"\ninsecure_loopback = true\n'
        f"drain_seconds = 2\ngrpc_threads = 4\n{tokens}"
    )


def client(port: int, role: str = "deployer") -> RolloutsClient:
    return Client(f"127.0.0.1:{port}", token=TOKENS[role]).rollouts


def final(rollouts: RolloutsClient, rollout_id: str, timeout: float = 60.0) -> RolloutStatus:
    """Follow WatchRollout until the rollout is final."""
    last: RolloutStatus | None = None
    deadline = time.monotonic() + timeout
    for status in rollouts.watch(rollout_id):
        last = status
        if status.final or time.monotonic() > deadline:
            break
    assert last is not None
    if not last.final:
        pytest.fail(f"rollout {rollout_id} still {last.state} after {timeout}s: {last.events}")
    return last


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
