"""Replicas on one PostgreSQL, with real processes: three servers, ten agents.

An assignment made through one replica reaches an agent connected to another
(LISTEN/NOTIFY), and a rollout survives SIGKILL of the replica advancing it:
another takes the lease and resumes from the stored step; the rollout
succeeds, every agent switched exactly once, no telemetry row is lost. The
agents of a replica killed with SIGKILL are recorded disconnected by another.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from support.agent import make_program
from support.aio import Blocking
from support.fleet_processes import (
    ADMIN_TOKEN,
    AGENT_TOKEN,
    AgentChild,
    ServerChild,
    ServerSetup,
    write_agent_config,
)
from support.simagents import SimAgent

from spikefleet.client import Client
from spikefleet.client.agent import AgentClient
from spikefleet.client.rollouts import RolloutRequest
from spikefleet_server.fleet import FleetStore
from spikefleet_server.storage import open_database

pytestmark = pytest.mark.slow

AGENTS = 10


def wait_until(condition: Callable[[], object], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def setup(tmp_path: Path, postgres_url: str) -> Iterator[ServerSetup]:
    prepared = ServerSetup(tmp_path, database=postgres_url)
    prepared.prepare({"old": make_program(1, "old"), "new": make_program(2, "new")})
    yield prepared
    for child in prepared.children:
        child.stop()


def start_replicas(setup: ServerSetup, count: int) -> list[ServerChild]:
    replicas = [setup.start(replica=str(i)) for i in range(count)]
    setup.children.extend(replicas)
    return replicas


def start_agent(setup: ServerSetup, agent_id: str, replicas: list[ServerChild]) -> AgentChild:
    path = write_agent_config(setup.root, agent_id, 0, setup.keys_dir)
    addresses = ", ".join(f'"127.0.0.1:{r.port}"' for r in replicas)
    path.write_text(
        re.sub(r'address = "127\.0\.0\.1:0"', f"address = [{addresses}]", path.read_text(), count=1)
    )
    agent = AgentChild(path)
    setup.children.append(agent)
    return agent


def serving(agent: AgentChild, sha256: str) -> bool:
    with AgentClient(agent.address) as client:
        return client.status().program_sha256 == sha256


def registered_at(replica: ServerChild, agent_id: str) -> bool:
    return any(
        '"fleet.connected"' in line and f'"{agent_id}"' in line
        for line in replica.recent(100_000).splitlines()
    )


def leader(replicas: list[ServerChild]) -> ServerChild | None:
    holders = [r for r in replicas if "replicas.lease_won" in r.recent(100_000)]
    return holders[-1] if len(holders) == 1 else None


def test_an_assignment_through_one_replica_reaches_an_agent_on_another(
    setup: ServerSetup,
) -> None:
    first, second = start_replicas(setup, 2)
    agent = start_agent(setup, "edge-00", [second])  # its stream is on the second
    wait_until(lambda: registered_at(second, "edge-00"), "the agent to register")
    first.assign("edge-00", setup.programs["new"])  # no reconnect: a NOTIFY carries it
    wait_until(lambda: serving(agent, setup.programs["new"]), "the agent to install it")
    assert not registered_at(first, "edge-00")


def test_killing_the_rollout_replica_mid_wave_loses_nothing(setup: ServerSetup) -> None:
    old, new = setup.programs["old"], setup.programs["new"]
    replicas = start_replicas(setup, 3)
    for i in range(AGENTS):
        replicas[0].assign(f"edge-{i:02d}", old)  # stored: delivered when each registers
    agents = [start_agent(setup, f"edge-{i:02d}", replicas) for i in range(AGENTS)]
    for agent in agents:
        wait_until(lambda agent=agent: serving(agent, old), "every agent to serve old")
    wait_until(lambda: leader(replicas) is not None, "one replica to hold the rollout lease")
    holder = leader(replicas)
    assert holder is not None
    others = [r for r in replicas if r is not holder]

    # Created through a replica that does not lead: the leader acts on the stored request.
    rollouts = Client(f"127.0.0.1:{others[0].port}", token=ADMIN_TOKEN).rollouts
    request = RolloutRequest(program_sha256=new, waves=(30.0, 100.0), bake_s=3.0)
    rollout_id = rollouts.create(request).rollout_id
    wait_until(
        lambda: (lambda r: r.phase == 0 and r.stage == "bake")(rollouts.get(rollout_id)),
        "the first wave to install and bake",
    )
    holder.kill9()
    survivors = others

    def takeover() -> bool:
        return any("rollouts.leading" in r.recent(100_000) for r in survivors)

    wait_until(takeover, "a surviving replica to take the rollout lease")
    done = None
    for status in rollouts.watch(rollout_id):  # on a survivor: its watch follows the leader
        done = status
        if status.final:
            break
    assert done is not None and done.state == "succeeded", done and done.events
    for agent in agents:
        wait_until(lambda agent=agent: serving(agent, new), "every agent to serve new")

    # Every batch each agent spooled reached the database once (drained first).
    def drained(agent: AgentChild) -> bool:
        with AgentClient(agent.address) as client:
            status = client.status()
        return status.connected and status.spooled_batches == 0

    for agent in agents:
        wait_until(lambda agent=agent: drained(agent), "every spool to drain")
    db = open_database(setup.database)
    try:
        store = Blocking(FleetStore(db))
        for i in range(AGENTS):
            agent_id = f"edge-{i:02d}"
            seqs = [r.seq for r in setup.telemetry(agent_id)]
            assert seqs and seqs == list(range(1, len(seqs) + 1)), agent_id
            switches = [
                r.sha256
                for r in store.installs(agent_id)
                if r.status == "INSTALLED" and r.detail != "already active"
            ]
            assert switches == [old, new], agent_id  # old at start, new once
    finally:
        db.close()


def test_the_agents_of_a_killed_replica_are_recorded_disconnected_by_another(
    setup: ServerSetup,
) -> None:
    """Agents that can only reach the killed replica never register elsewhere: without
    its liveness lock, the survivor records them disconnected (and only them)."""
    doomed, survivor = start_replicas(setup, 2)
    metadata = (("authorization", f"Bearer {AGENT_TOKEN}"),)
    placed = {"a-0": doomed, "a-1": doomed, "a-2": doomed, "b-0": survivor}
    agents = [
        SimAgent(
            grpc.insecure_channel(f"127.0.0.1:{replica.port}"), agent_id, metadata=metadata
        ).start()
        for agent_id, replica in placed.items()
    ]
    try:
        viewer = Client(f"127.0.0.1:{survivor.port}", token=ADMIN_TOKEN)

        def connected() -> set[str]:
            return {a.agent_id for a in viewer.agents() if a.connected}

        wait_until(lambda: connected() == set(placed), "every agent to be recorded connected")
        doomed.kill9()
        wait_until(
            lambda: connected() == {"b-0"},
            "the survivor to record the killed replica's agents disconnected",
        )
        assert {a.agent_id for a in viewer.agents()} == set(placed)  # still known
        assert '"replicas.replica_gone"' in survivor.recent(100_000)
    finally:
        for agent in agents:
            agent.stop()
