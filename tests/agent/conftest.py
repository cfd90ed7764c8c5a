"""Standalone agents (no server) with a program already in their slots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.agent import make_key, make_program, signed_program

from spikefleet.program.model import Program
from spikefleet.program.signing import SigningKey, TrustedKeys
from spikefleet_agent.config import AgentConfig, InferenceConfig, TelemetryConfig
from spikefleet_agent.daemon import Agent
from spikefleet_agent.programs.slots import SlotStore


@pytest.fixture
def signing_key(tmp_path: Path) -> SigningKey:
    return make_key(tmp_path / "keys")


def preinstall(state_dir: Path, keys: Path, program: Program, key: SigningKey) -> str:
    """Put ``program`` in a slot and make it active, as a finished install would."""
    sha, data = signed_program(program, key)
    store = SlotStore(state_dir / "programs", TrustedKeys.load(keys))
    slot = store.inactive_slot()
    store.write(slot, data)
    store.activate(slot, sha)
    return sha


@pytest.fixture
def standalone_agent(tmp_path: Path, signing_key: SigningKey) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def start(
        program: Program | None = None,
        *,
        name: str = "edge-1",
        address: str = "127.0.0.1:0",
        token: str = "",
        metrics: bool = False,
        backend: str = "sim",
        hardware_device: object = None,
        **inference: int,
    ) -> Agent:
        state = tmp_path / name
        if program is not None:
            preinstall(state, tmp_path / "keys", program, signing_key)
        token_file = ""
        if token:
            (tmp_path / f"{name}.token").write_text(token)
            token_file = str(tmp_path / f"{name}.token")
        config = AgentConfig(
            agent_id=name,
            backend=backend,
            state_dir=state,
            lock_dir=tmp_path / f"{name}-locks",
            trusted_keys=[tmp_path / "keys"],
            inference=InferenceConfig(address=address, token_file=token_file, **inference),
            telemetry=TelemetryConfig(interval_s=3600, metrics_port=_free_port() if metrics else 0),
        ).validate()
        agent = Agent(
            config, hardware_device=hardware_device, pci_root=tmp_path / "no-sysfs"
        ).start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def program() -> Program:
    return make_program(1)
