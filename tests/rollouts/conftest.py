"""Fixtures: a real fleet server on loopback and lightweight agents dialing it over gRPC."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_server import FleetServer

from spikefleet.client.rollouts import RolloutsClient, RolloutStatus
from spikefleet_server.rollouts.simagents import Behaviour, SimAgent


def program_bytes(name: str) -> tuple[str, bytes]:
    data = f"program {name} ".encode() * 64
    return hashlib.sha256(data).hexdigest(), data


OLD, OLD_BYTES = program_bytes("old")
NEW, NEW_BYTES = program_bytes("new")
BAD, BAD_BYTES = program_bytes("bad")


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()`` holds; the timeout bounds a hang, it is not a speed goal."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def final(client: RolloutsClient, rollout_id: str, timeout: float = 60.0) -> RolloutStatus:
    """Follow WatchRollout until the rollout is final."""
    last: RolloutStatus | None = None
    deadline = time.monotonic() + timeout
    for status in client.watch(rollout_id):
        last = status
        if status.final or time.monotonic() > deadline:
            break
    assert last is not None
    if not last.final:
        pytest.fail(f"rollout {rollout_id} still {last.state} after {timeout}s: {last.events}")
    return last


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FleetServer]:
    programs = {OLD: OLD_BYTES, NEW: NEW_BYTES, BAD: BAD_BYTES}
    fleet = FleetServer(tmp_path / "server.sqlite", programs).start()
    yield fleet
    fleet.stop()


class Agents:
    """Starts SimAgents against an address and stops them all at the end."""

    def __init__(self) -> None:
        self.started: list[SimAgent] = []

    def start(
        self,
        address: str,
        count: int,
        *,
        prefix: str = "edge",
        labels: dict[str, str] | None = None,
        program: str = OLD,
        behaviour: Behaviour | None = None,
    ) -> list[SimAgent]:
        agents = [
            SimAgent(
                grpc.insecure_channel(address),
                f"{prefix}-{i:02d}",
                labels=labels or {"site": "lab"},
                program_sha256=program,
                behaviour=behaviour or Behaviour(frames_per_batch=50),
                heartbeat_s=0.1,
                telemetry_s=0.1,
            )
            for i in range(count)
        ]
        for agent in agents:
            agent.previous = ""
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
