"""Programs that verify but cannot run: the agent keeps serving and the server hears why.

A program is small on disk whatever its input size, so the agent refuses one whose
engine memory is over its cap, and any failure to load one (MemoryError included)
is reported to the server while the other slot keeps serving.
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fleet_helpers import FleetServer
from support.agent import make_program
from support.fleet_processes import AgentChild
from support.program_factory import huge_input_program
from support.waiting import wait_for

from spikefleet.client.agent import AgentClient
from spikefleet.program.codec import encode
from spikefleet.program.model import (
    Convolutional,
    InputData,
    Padding,
    Program,
)
from spikefleet.program.signing import SigningKey, TrustedKeys, sign
from spikefleet_agent.config import AgentConfig, InferenceConfig, ServerConfig, TelemetryConfig
from spikefleet_agent.daemon import Agent
from spikefleet_agent.programs.slots import SlotStore


def int32_overflow_program() -> Program:
    """Verifies, fits the memory cap, and the engine refuses to build it (its sums could
    leave int32): a program that cannot load."""
    channels = 420_000  # 7 * 15 * 49 * channels > 2**31
    return Program(
        "cannot-load",
        [
            InputData("input", (1, 1, channels), 4),
            Convolutional(
                "conv",
                np.full((7, 7, channels, 1), 7, np.int8),
                np.zeros(1, np.int32),
                padding=Padding.SAME,
            ),
        ],
    )


def signed(program: Program, key: SigningKey) -> tuple[str, bytes]:
    envelope = sign(encode(program, max_engine_bytes=0), key)
    return envelope.sha256, envelope.to_bytes()


def reports(server: FleetServer, agent_id: str) -> list[tuple[str, str, str, str]]:
    return [(r.status, r.sha256, r.reason, r.detail) for r in server.fleet.store.installs(agent_id)]


def test_a_program_over_the_agents_memory_cap_is_refused_naming_the_cap(
    fleet_server: FleetServer, start_agent: Callable[..., Agent], signing_key: SigningKey
) -> None:
    good_sha, good = signed(make_program(1), signing_key)
    huge_sha, huge = signed(huge_input_program(), signing_key)
    fleet_server.programs.update({good_sha: good, huge_sha: huge})
    agent = start_agent("edge-1")
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-1"], "connect")
    fleet_server.fleet.assign("edge-1", good_sha)
    wait_for(lambda: len(reports(fleet_server, "edge-1")) == 1, "the first install")
    fleet_server.fleet.assign("edge-1", huge_sha)
    wait_for(lambda: len(reports(fleet_server, "edge-1")) == 2, "the second install report")
    status, sha, reason, detail = reports(fleet_server, "edge-1")[1]
    assert (status, sha, reason) == ("REFUSED", huge_sha, "malformed")
    assert "engine memory" in detail and "max_engine_bytes" in detail
    assert agent.runtime is not None and agent.runtime.current().sha256 == good_sha


def _agent_with_slots(
    tmp_path: Path, server: FleetServer, active: bytes, active_sha: str, other: bytes, sha: str
) -> AgentConfig:
    """An agent whose active slot holds ``active`` and whose previous slot holds ``other``."""
    state = tmp_path / "edge-1"
    slots = SlotStore(state / "programs", TrustedKeys.load(tmp_path / "keys"))
    slots.write("a", other)
    slots.activate("a", sha)
    slots.write("b", active)
    slots.activate("b", active_sha)
    return AgentConfig(
        agent_id="edge-1",
        state_dir=state,
        lock_dir=tmp_path / "locks",
        trusted_keys=[tmp_path / "keys"],
        server=ServerConfig(address=server.address, reconnect_min_s=0.05, reconnect_max_s=0.5),
        inference=InferenceConfig(address="127.0.0.1:0"),
        telemetry=TelemetryConfig(interval_s=3600),
    ).validate()


def test_an_active_program_that_cannot_load_at_boot_falls_back_and_is_reported(
    tmp_path: Path, fleet_server: FleetServer, signing_key: SigningKey
) -> None:
    good_sha, good = signed(make_program(1), signing_key)
    bad_sha, bad = signed(int32_overflow_program(), signing_key)
    config = _agent_with_slots(tmp_path, fleet_server, bad, bad_sha, good, good_sha)
    agent = Agent(config, pci_root=tmp_path / "no-sysfs").start()
    try:
        assert agent.runtime is not None and agent.runtime.current().sha256 == good_sha
        wait_for(lambda: reports(fleet_server, "edge-1"), "the boot failure report")
        ((status, sha, reason, detail),) = reports(fleet_server, "edge-1")
        assert (status, sha, reason) == ("FAILED", bad_sha, "load")
        assert "beyond int32" in detail
        record = fleet_server.fleet.store.agent("edge-1")
        assert record is not None and record.program_sha256 == good_sha
    finally:
        agent.stop()
    state = SlotStore(config.state_dir / "programs", TrustedKeys.load(tmp_path / "keys")).state()
    assert state is not None and state.sha256 == good_sha  # the next boot starts there


@pytest.fixture
def children() -> Iterator[list[AgentChild]]:
    started: list[AgentChild] = []
    yield started
    for child in started:
        child.stop()


def _vm_size(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmSize:\s+(\d+) kB", text)
    assert found is not None
    return int(found.group(1)) * 1024


@pytest.mark.slow
def test_a_memory_error_while_installing_is_reported_and_the_old_program_keeps_serving(
    tmp_path: Path,
    fleet_server: FleetServer,
    signing_key: SigningKey,
    children: list[AgentChild],
) -> None:
    good_sha, good = signed(make_program(1), signing_key)
    huge_sha, huge = signed(huge_input_program(), signing_key)
    fleet_server.programs.update({good_sha: good, huge_sha: huge})
    config = tmp_path / "agent.toml"
    config.write_text(
        f'agent_id = "edge-1"\nstate_dir = "{tmp_path / "edge-1"}"\n'
        f'lock_dir = "{tmp_path / "locks"}"\ntrusted_keys = ["{tmp_path / "keys"}"]\n'
        "max_engine_bytes = 0\n"  # no cap: the engine itself runs out of memory
        f'[server]\naddress = "{fleet_server.address}"\nreconnect_min_s = 0.1\n'
        '[inference]\naddress = "127.0.0.1:0"\n'
    )
    agent = AgentChild(config)
    children.append(agent)
    wait_for(lambda: fleet_server.fleet.connected() == ["edge-1"], "connect")
    fleet_server.fleet.assign("edge-1", good_sha)
    wait_for(lambda: len(reports(fleet_server, "edge-1")) == 1, "the first install")
    # a host with 1 GiB of memory to spare: the huge program's engine cannot get it
    pid = agent.process.pid
    limit = _vm_size(pid) + 1024**3
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    fleet_server.fleet.assign("edge-1", huge_sha)
    wait_for(lambda: len(reports(fleet_server, "edge-1")) == 2, "the second install report")
    status, sha, reason, detail = reports(fleet_server, "edge-1")[1]
    assert (status, sha, reason) == ("FAILED", huge_sha, "load")
    assert "MemoryError" in detail
    with AgentClient(agent.address) as client:
        deadline = time.monotonic() + 30
        while client.status().program_sha256 != good_sha and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.status().program_sha256 == good_sha
        assert len(client.infer(np.zeros((2, 34, 34, 2), np.uint8)).classes) == 2
