"""Done-when of the agent issue, with real spikefleet-server and spikefleet-agent processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.agent import make_program, random_frames, tamper
from support.fleet_processes import (
    ADMIN_TOKEN,
    AgentChild,
    ServerChild,
    ServerSetup,
    write_agent_config,
)

from spikefleet.cli.main import main
from spikefleet.client.agent import AgentClient
from spikefleet.engine import Engine
from spikefleet_server.storage import open_database
from spikefleet_server.telemetry import TelemetryStore

pytestmark = pytest.mark.slow

PROGRAMS = {"alpha": make_program(1, "alpha"), "beta": make_program(2, "beta")}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[ServerSetup]:
    with ServerSetup.prepared(tmp_path, PROGRAMS) as prepared:
        yield prepared


@pytest.fixture
def server(setup: ServerSetup) -> Iterator[ServerChild]:
    child = setup.start()
    yield child
    child.stop()


def start_agent(setup: ServerSetup, server: ServerChild, agent_id: str = "edge-1") -> AgentChild:
    agent = AgentChild(write_agent_config(setup.root, agent_id, server.port, setup.keys_dir))
    setup.children.append(agent)
    return agent


def serving(agent: AgentChild, sha256: str, timeout: float = 60) -> AgentClient:
    """A client of ``agent`` once it serves ``sha256`` (installs are asynchronous)."""
    client = AgentClient(agent.address)
    deadline = time.monotonic() + timeout
    while client.status().program_sha256 != sha256:
        if time.monotonic() > deadline:
            raise AssertionError(f"agent never served {sha256}; log:\n{agent.recent()}")
        time.sleep(0.05)
    return client


def test_assigned_program_is_verified_installed_and_predicts_like_the_engine(
    setup: ServerSetup, server: ServerChild
) -> None:
    agent = start_agent(setup, server)
    try:
        sha = setup.programs["alpha"]
        server.assign("edge-1", sha)
        frames = random_frames(32, seed=11)
        with serving(agent, sha) as client:
            prediction = client.infer(frames)
            assert client.status().connected
        np.testing.assert_array_equal(prediction.classes, Engine(PROGRAMS["alpha"]).predict(frames))
        agent.wait_for(r"install\.done")
    finally:
        agent.stop()


def test_tampered_program_is_refused_and_reported_while_the_old_one_serves(
    setup: ServerSetup, server: ServerChild
) -> None:
    good, bad = setup.programs["alpha"], setup.programs["beta"]
    path = setup.program_file(bad)
    path.write_bytes(tamper(path.read_bytes()))  # the stored file changed behind the server
    agent = start_agent(setup, server)
    try:
        server.assign("edge-1", good)
        serving(agent, good).close()
        server.assign("edge-1", bad)
        agent.wait_for(r"(?=.*install\.rejected)(?=.*tampered)")
        server.wait_for(r"(?=.*fleet\.install_report)(?=.*REFUSED)(?=.*tampered)")
        with AgentClient(agent.address) as client:
            assert client.infer(random_frames(2)).program_sha256 == good
    finally:
        agent.stop()


def test_kill_9_during_install_leaves_a_verified_working_program(
    setup: ServerSetup, server: ServerChild
) -> None:
    alpha, beta = setup.programs["alpha"], setup.programs["beta"]
    frames = random_frames(8, seed=3)
    expected = {sha: Engine(PROGRAMS[name]).predict(frames) for name, sha in setup.programs.items()}
    agent = start_agent(setup, server)
    server.assign("edge-1", alpha)
    serving(agent, alpha).close()
    target = alpha
    for delay_ms in (0, 2, 5, 10, 20, 40):
        target = beta if target == alpha else alpha
        server.assign("edge-1", target)
        time.sleep(delay_ms / 1000)
        agent.kill9()
        agent = start_agent(setup, server)
        with AgentClient(agent.address) as client:
            status = client.status()
            assert status.program_sha256 in expected  # one of the two, never none
            prediction = client.infer(frames)
        np.testing.assert_array_equal(prediction.classes, expected[prediction.program_sha256])
        serving(agent, target).close()  # and it finishes the assignment afterwards
    agent.stop()


def test_cli_assigns_a_program_and_shows_the_agent_status(
    setup: ServerSetup, server: ServerChild, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = start_agent(setup, server)
    try:
        sha = setup.programs["beta"]
        server_args = ["--server", f"127.0.0.1:{server.port}", "--token", ADMIN_TOKEN]
        assert main([*server_args, "agent", "assign", "edge-1", sha, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["generation"] == 1
        serving(agent, sha).close()
        assert main(["agent", "status", agent.address, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert (status["agent_id"], status["program_sha256"]) == ("edge-1", sha)
        assert status["program_name"] == "beta" and status["connected"]

        assert main([*server_args, "agent", "assign", "edge-1", "00" * 32]) == 1
        assert "no program '000000" in capsys.readouterr().err
    finally:
        agent.stop()


def test_telemetry_sent_while_the_server_was_down_arrives_once_in_order(
    setup: ServerSetup, server: ServerChild
) -> None:
    port = server.port
    agent = start_agent(setup, server)
    sha = setup.programs["alpha"]
    server.assign("edge-1", sha)
    frames = random_frames(10, seed=4)
    inferred = 0
    with serving(agent, sha) as client:
        server.stop()  # SIGTERM: the server drains and exits
        deadline = time.monotonic() + 3.0  # several telemetry periods (0.5 s) of outage
        while time.monotonic() < deadline:
            client.infer(frames)
            inferred += len(frames)
            time.sleep(0.01)
        assert not client.status().connected
        assert client.status().spooled_batches >= 3
        restarted = setup.start(port)
        try:
            deadline = time.monotonic() + 60
            while client.status().spooled_batches or not client.status().connected:
                assert time.monotonic() < deadline, "the spool never drained"
                time.sleep(0.1)
        finally:
            restarted.stop()
    agent.stop()

    db = open_database(setup.data_dir / "spikefleet.db")
    try:
        records = asyncio.run(TelemetryStore(db).of_agent("edge-1"))
    finally:
        db.close()
    seqs = [r.seq for r in records]
    assert seqs == list(range(1, len(seqs) + 1))  # every batch, once, in order
    assert sum(r.batch.frames for r in records) >= inferred  # nothing inferred went missing
