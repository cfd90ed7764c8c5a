"""spikefleet.client.Client against a real server: typed results, named errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from support.server import FC_ARCH, client_for, fc_model

from spikefleet.client import Client, ClientTLS
from spikefleet.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ServerUnavailableError,
    SpikefleetError,
)
from spikefleet.program.signing import PublicKey, TrustedKeys, verify
from spikefleet_server.app import ServerApp


def test_programs_round_trip_byte_identical(server: ServerApp, tmp_path: Path):
    with client_for(server) as client:
        info = client.convert(fc_model(tmp_path / "m.safetensors", seed=1), arch=FC_ARCH)
        assert info.name == "m"  # the file's stem by default
        listed = client.programs.list(name="m")
        assert listed == [info]
        assert client.programs.describe(info.sha256) == info
        assert client.programs.describe(info.sha256[:10]) == info
        assert client.programs.describe("m", version=1) == info
        data = client.programs.get("m")
        pems = client.programs.trusted_keys()
    assert data == server.registry.get_bytes(info.sha256)
    trusted = TrustedKeys(PublicKey.from_pem(pem) for pem in pems.values())
    assert verify(data, trusted)


def test_large_programs_arrive_whole_over_many_chunks(server: ServerApp):
    program = bytes(range(256)) * 1000  # 256 kB: several 64 kB chunks
    record = server.registry.put(program, name="large")
    with client_for(server, "viewer") as client:
        data = client.programs.get(record.sha256)
    assert verify(data, TrustedKeys([server.signing_key.public_key])) == program


def test_list_filters_travel_to_the_server(server: ServerApp):
    server.registry.put(b"l1", name="filtered", labels={"stage": "dev"})
    server.registry.put(b"l2", name="filtered", labels={"stage": "prod"})
    with client_for(server, "viewer") as client:
        prod = client.programs.list(name="filtered", labels={"stage": "prod"})
        latest = client.programs.list(name="filtered", latest_only=True)
    assert [p.version for p in prod] == [2] and [p.version for p in latest] == [2]


def test_errors_are_named_exceptions(server: ServerApp):
    record = server.registry.put(b"guarded", name="guarded")
    with client_for(server, "viewer") as viewer:
        with pytest.raises(NotFoundError, match="no program 'absent'") as caught:
            viewer.programs.describe("absent")
        assert caught.value.code == "NOT_FOUND"
        with pytest.raises(AuthError, match="needs role admin"):
            viewer.programs.delete(record.sha256)
    server.registry.usage = lambda conn, sha: ["edge-3"] if sha == record.sha256 else []
    try:
        with client_for(server, "admin") as admin, pytest.raises(ConflictError, match="edge-3"):
            admin.programs.delete(record.sha256)
    finally:
        server.registry.usage = None
    with client_for(server, "admin") as admin:
        assert admin.programs.delete("guarded").sha256 == record.sha256
        with pytest.raises(NotFoundError):
            admin.programs.get(record.sha256)


def test_an_unreachable_server_is_named():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        Client(f"127.0.0.1:{port}", token="t", timeout=5) as client,
        pytest.raises(
            ServerUnavailableError, match=f"cannot reach spikefleet-server at 127.0.0.1:{port}"
        ),
    ):
        client.programs.list()


def test_bad_client_settings_are_refused_before_connecting(tmp_path: Path):
    with pytest.raises(SpikefleetError, match="no such model file"):
        Client("127.0.0.1:1").convert(tmp_path / "absent.pt", name="x")
    with pytest.raises(SpikefleetError, match="both a client certificate and its key"):
        Client("127.0.0.1:1", tls=ClientTLS(cert=tmp_path / "c.pem"))
    with pytest.raises(SpikefleetError, match="cannot read TLS file"):
        Client("127.0.0.1:1", tls=ClientTLS(ca=tmp_path / "absent-ca.pem"))
