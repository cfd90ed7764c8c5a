"""TLS and mTLS end to end with real certificates and real processes: a server that wants
client certificates, an agent that presents one, and the agent's own inference API
over TLS with a token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.agent import make_key
from support.certs import CertificateAuthority, Issued
from support.fleet_processes import BIN, AgentChild, Child

from spikefleet.client import Client, ClientTLS
from spikefleet.client.agent import AgentClient
from spikefleet.errors import AgentRequestError, SpikefleetError
from spikefleet_server.config import hash_token

pytestmark = pytest.mark.slow

AGENT_TOKEN = "agent-token-tls"
VIEWER_TOKEN = "viewer-token-tls"
INFERENCE_TOKEN = "inference-token-tls"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued | CertificateAuthority]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    return {
        "ca": ca,
        "server": ca.issue("server", server=True),
        "agent": ca.issue("edge-1", server=False),
        "operator": ca.issue("operator", server=False),
    }


class ServerTLSChild(Child):
    def __init__(self, root: Path, pki: dict) -> None:
        tokens = "".join(
            f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
            for role, token in (("agent", AGENT_TOKEN), ("viewer", VIEWER_TOKEN))
        )
        config = root / "server.toml"
        config.write_text(
            f'listen = "127.0.0.1:0"\ndata_dir = "{root / "data"}"\ndrain_seconds = 1\n'
            f'[tls]\ncert = "{pki["server"].cert}"\nkey = "{pki["server"].key}"\n'
            f'client_ca = "{pki["ca"].path}"\n{tokens}'
        )
        super().__init__([str(BIN / "spikefleet-server"), "serve", "--config", str(config)])
        self.port = int(self.wait_for(r"listening on port (\d+)").group(1))


@pytest.fixture
def server(tmp_path: Path, pki: dict) -> Iterator[ServerTLSChild]:
    child = ServerTLSChild(tmp_path, pki)
    yield child
    child.stop()


def agent_config(root: Path, pki: dict, server_port: int, *, with_cert: bool) -> Path:
    make_key(root / "keys")
    token = root / "agent.token"
    token.write_text(AGENT_TOKEN)
    token.chmod(0o600)
    inference_token = root / "inference.token"
    inference_token.write_text(INFERENCE_TOKEN)
    inference_token.chmod(0o600)
    client_cert = (
        f'tls_cert = "{pki["agent"].cert}"\ntls_key = "{pki["agent"].key}"\n' if with_cert else ""
    )
    path = root / "agent.toml"
    path.write_text(
        f'agent_id = "edge-1"\nstate_dir = "{root / "state"}"\nlock_dir = "{root / "locks"}"\n'
        f'trusted_keys = ["{root / "keys"}"]\n'
        f'[server]\naddress = "127.0.0.1:{server_port}"\ntoken_file = "{token}"\n'
        f'tls_ca = "{pki["ca"].path}"\n{client_cert}'
        "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
        f'[inference]\naddress = "0.0.0.0:0"\ntoken_file = "{inference_token}"\n'
        f'tls_cert = "{pki["server"].cert}"\ntls_key = "{pki["server"].key}"\n'
    )
    return path


def operator(server: ServerTLSChild, pki: dict) -> Client:
    tls = ClientTLS(ca=pki["ca"].path, cert=pki["operator"].cert, key=pki["operator"].key)
    return Client(f"127.0.0.1:{server.port}", token=VIEWER_TOKEN, tls=tls)


def connected_agents(server: ServerTLSChild, pki: dict) -> list[str]:
    with operator(server, pki) as client:
        return [a.agent_id for a in client.rollouts.agents() if a.connected]


def test_an_agent_with_a_client_certificate_joins_an_mtls_server(
    tmp_path: Path, server: ServerTLSChild, pki: dict
) -> None:
    agent = AgentChild(agent_config(tmp_path, pki, server.port, with_cert=True))
    try:
        agent.wait_for(r"control.registered")
        assert connected_agents(server, pki) == ["edge-1"]
    finally:
        agent.stop()


def test_an_agent_without_a_client_certificate_is_kept_out(
    tmp_path: Path, server: ServerTLSChild, pki: dict
) -> None:
    agent = AgentChild(agent_config(tmp_path, pki, server.port, with_cert=False))
    try:
        agent.wait_for(r"control.stream_down")
        assert connected_agents(server, pki) == []
    finally:
        agent.stop()


def test_the_cli_reaches_the_mtls_server_with_its_certificate_only(
    server: ServerTLSChild, pki: dict
) -> None:
    env = {
        **os.environ,
        "SPIKEFLEET_TLS_CA": str(pki["ca"].path),
        "SPIKEFLEET_TLS_CERT": str(pki["operator"].cert),
        "SPIKEFLEET_TLS_KEY": str(pki["operator"].key),
    }
    argv = [str(BIN / "spikefleet"), "--server", f"127.0.0.1:{server.port}", "agents", "--json"]
    ok = subprocess.run(
        argv, env={**env, "SPIKEFLEET_TOKEN": VIEWER_TOKEN}, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []
    del env["SPIKEFLEET_TLS_CERT"], env["SPIKEFLEET_TLS_KEY"]
    refused = subprocess.run(
        argv, env={**env, "SPIKEFLEET_TOKEN": VIEWER_TOKEN}, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def test_the_inference_api_serves_tls_with_a_token_off_the_host(
    tmp_path: Path, server: ServerTLSChild, pki: dict
) -> None:
    agent = AgentChild(agent_config(tmp_path, pki, server.port, with_cert=True))
    try:
        port = agent.address.rsplit(":", 1)[1]
        address = f"{socket.gethostname()}:{port}"  # not loopback by its spelling
        tls = ClientTLS(ca=pki["ca"].path, server_name="localhost")
        with AgentClient(address, token=INFERENCE_TOKEN, tls=tls) as client:
            assert client.status().agent_id == "edge-1"
        with AgentClient(address, tls=tls) as client, pytest.raises(AgentRequestError):
            client.status()  # no token
        plain = AgentClient(address, token=INFERENCE_TOKEN, tls=False, timeout=3)
        with plain, pytest.raises((AgentRequestError, SpikefleetError, grpc.RpcError)):
            plain.status()  # plaintext to a TLS port
    finally:
        agent.stop()
