"""Signing-key rotation with real processes: add a key, sign with it, retire the old one.

The agent pins only the first key. Each rotation endorses the next key with the
current one (``spikefleet-server keys endorse``) and restarts the server signing
with it; the agent follows through the TrustedKeys call and installs programs
signed by the new key. Retiring a key it learned makes programs that key signed
refused, while the program it runs keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import make_program
from support.fleet_processes import AgentChild, ServerChild, ServerSetup, write_agent_config

from spikefleet.client.agent import AgentClient
from spikefleet.program.signing import SigningKey
from spikefleet_server.cli import main as server_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[ServerSetup]:
    prepared = ServerSetup(tmp_path).prepare({"alpha": make_program(1, "alpha")})
    yield prepared
    for child in prepared.children:
        child.stop()


def restart_signing_with(
    setup: ServerSetup, old: ServerChild, key_file: Path, published: Path
) -> ServerChild:
    old.stop()
    config = setup.root / "server.toml"
    tokens = config.read_text().split("[[tokens]]", 1)[1]
    config.write_text(
        f'drain_seconds = 1.0\nsigning_key = "{key_file}"\ntrusted_keys_dir = "{published}"\n'
        f"[[tokens]]{tokens}"
    )
    server = setup.start(old.port)
    setup.children.append(server)
    return server


def wait_serving(client: AgentClient, agent: AgentChild, sha256: str) -> None:
    deadline = time.monotonic() + 60
    while client.status().program_sha256 != sha256:
        if time.monotonic() > deadline:
            raise AssertionError(f"agent never served {sha256[:12]}; log:\n{agent.recent()}")
        time.sleep(0.05)


def test_agents_follow_a_rotation_and_refuse_what_a_retired_key_signed(
    setup: ServerSetup,
) -> None:
    server = setup.start()
    setup.children.append(server)
    agent = AgentChild(write_agent_config(setup.root, "edge-1", server.port, setup.keys_dir))
    setup.children.append(agent)
    client = AgentClient(agent.address)
    server.assign("edge-1", setup.programs["alpha"])
    wait_serving(client, agent, setup.programs["alpha"])  # signed by k0, the pinned key

    # Add k1: endorsed by k0 into the directory the server publishes, then sign with it.
    published = setup.root / "published"
    k0_file = setup.data_dir / "keys" / "signing.key"
    k1_file, k2_file = setup.root / "k1.key", setup.root / "k2.key"
    assert server_cli(["keys", "generate", str(k1_file)]) == 0
    assert (
        server_cli(["keys", "endorse", str(k1_file), "--by", str(k0_file), "--out", str(published)])
        == 0
    )
    SigningKey.load(k0_file).public_key.save(published / "k0.pub")  # k0's programs still verify
    k1 = SigningKey.load(k1_file)
    beta = setup.store({"beta": make_program(2, "beta")}, k1)["beta"]
    server = restart_signing_with(setup, server, k1_file, published)
    server.assign("edge-1", beta)
    wait_serving(client, agent, beta)
    assert (setup.root / "edge-1" / "keys" / f"{k1.key_id}.endorsement").is_file()

    # Rotate again and retire k1: k2 is endorsed by k1, and only k2 is published now.
    assert server_cli(["keys", "generate", str(k2_file)]) == 0
    assert (
        server_cli(["keys", "endorse", str(k2_file), "--by", str(k1_file), "--out", str(published)])
        == 0
    )
    for retired in ("k0.pub", f"{k1.key_id}.endorsement"):
        (published / retired).unlink()
    gamma = setup.store({"gamma": make_program(3, "gamma")}, SigningKey.load(k2_file))["gamma"]
    server = restart_signing_with(setup, server, k2_file, published)
    server.assign("edge-1", gamma)  # its signer is learned before the install verifies it
    wait_serving(client, agent, gamma)
    assert not (setup.root / "edge-1" / "keys" / f"{k1.key_id}.endorsement").exists()

    server.assign("edge-1", beta)  # signed by the retired k1
    rejected = agent.wait_for(r'"event": "install.rejected"').string
    assert '"unknown-key"' in rejected and k1.key_id in rejected
    assert client.status().program_sha256 == gamma  # the running program keeps serving
    client.close()
