"""Agents fail over between server replicas and lose no telemetry (real processes).

Two ``spikefleet-server`` processes share one data directory (one database, one
signing key, one registry), as replicas do; the agent lists both. Killing the
replica it is connected to with SIGKILL must move it to the other, and every
telemetry batch must be stored exactly once: the seqs in the database are
1..N without a gap, and the frames they count cover every frame inferred.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import make_program, random_frames
from support.fleet_processes import BIN, AgentChild, ServerChild, ServerSetup, write_agent_config

from spikefleet.client.agent import AgentClient

pytestmark = pytest.mark.slow

PROGRAMS = {"alpha": make_program(1, "alpha")}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[ServerSetup]:
    with ServerSetup.prepared(tmp_path, PROGRAMS) as prepared:
        yield prepared


def start_server(setup: ServerSetup, listen: str = "127.0.0.1:0") -> ServerChild:
    server = ServerChild(
        [
            str(BIN / "spikefleet-server"),
            "serve",
            "--config",
            str(setup.root / "server.toml"),
            "--data-dir",
            str(setup.data_dir),
            "--listen",
            listen,
            "--insecure-loopback",
        ]
    )
    setup.children.append(server)
    return server


def start_agent(setup: ServerSetup, addresses: str | list[str]) -> AgentChild:
    """An agent whose ``[server] address`` is ``addresses`` (one target or a list)."""
    path = write_agent_config(setup.root, "edge-1", 0, setup.keys_dir)
    text = re.sub(
        r'address = "127\.0\.0\.1:0"',
        f"address = {json.dumps(addresses)}",
        path.read_text(),
        count=1,
    )
    path.write_text(text)
    agent = AgentChild(path)
    setup.children.append(agent)
    return agent


def connects(server: ServerChild) -> int:
    """How many times edge-1's control stream registered at ``server``."""
    return sum(1 for line in server.recent(10_000).splitlines() if '"fleet.connected"' in line)


def wait_until(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def infer_for(client: AgentClient, seconds: float) -> int:
    frames = random_frames(10, seed=7)
    inferred = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.infer(frames)
        inferred += len(frames)
        time.sleep(0.01)
    return inferred


def drained(client: AgentClient) -> bool:
    status = client.status()
    return status.connected and status.spooled_batches == 0


def test_killing_the_agents_replica_moves_it_to_the_other_and_loses_no_telemetry(
    setup: ServerSetup,
) -> None:
    first, second = start_server(setup), start_server(setup)
    sha = setup.programs["alpha"]
    # Before the agent connects: its desired program is read from the shared database by
    # whichever replica it registers at (pushes across replicas come with LISTEN/NOTIFY).
    first.assign("edge-1", sha)
    agent = start_agent(setup, [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"])
    client = AgentClient(agent.address)
    wait_until(lambda: client.status().program_sha256 == sha, "the agent to serve alpha")
    wait_until(lambda: connects(first) + connects(second) >= 1, "a replica to log the agent")
    serving, standby = (first, second) if connects(first) else (second, first)

    inferred = infer_for(client, 2.0)  # several telemetry periods (0.5 s) on the first
    serving.kill9()  # whatever it had received but not stored is not acked
    inferred += infer_for(client, 1.0)
    wait_until(lambda: connects(standby) >= 1, "the agent to fail over to the other replica")
    inferred += infer_for(client, 1.0)
    # the frames of the period still open are spooled at its end, then sent
    wait_until(
        lambda: sum(r.batch.frames for r in setup.telemetry("edge-1")) >= inferred,
        "every inferred frame to be counted in stored telemetry",
    )
    client.close()
    agent.stop()

    seqs = [r.seq for r in setup.telemetry("edge-1")]
    assert len(seqs) >= 6
    assert seqs == list(range(1, len(seqs) + 1))  # every batch, once, in order


def test_a_target_resolving_to_several_addresses_fails_over_within_it(
    setup: ServerSetup,
) -> None:
    """One name with several addresses (here gRPC's ``ipv4:`` list, as DNS would give):
    with the first address dead, the agent reaches the server at the second."""
    server = start_server(setup, "127.0.0.2:0")
    target = f"ipv4:127.0.0.1:{server.port},127.0.0.2:{server.port}"
    agent = start_agent(setup, target)
    client = AgentClient(agent.address)
    wait_until(lambda: client.status().connected, "the agent to connect through the name")
    # the server it reached is the only one there is (how many times: a loaded machine
    # may have it redial once more)
    wait_until(lambda: connects(server) >= 1, "the server to log the agent's registration")
    client.close()


def test_streams_end_at_the_maximum_connection_age_and_agents_redial_losing_nothing(
    setup: ServerSetup,
) -> None:
    config = setup.root / "server.toml"
    config.write_text("max_connection_age_seconds = 1.0\n" + config.read_text())
    server = start_server(setup)
    agent = start_agent(setup, f"127.0.0.1:{server.port}")
    client = AgentClient(agent.address)
    wait_until(lambda: connects(server) >= 3, "the agent to be disconnected and redial twice")
    wait_until(lambda: drained(client), "the spool to drain")
    client.close()
    agent.stop()
    server.stop()
    seqs = [r.seq for r in setup.telemetry("edge-1")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3
