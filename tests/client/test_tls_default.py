"""TLS by default off the host: what each client sends first to a non-loopback address.

A raw TCP listener on all interfaces records the first bytes a client sends: a TLS
ClientHello starts with 0x16 0x03; plaintext gRPC starts with the HTTP/2 preface, and
would carry the bearer token in clear right after it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikefleet.client import Client
from spikefleet.client.agent import AgentClient
from spikefleet.client.tls import is_local_address, use_tls

HTTP2_PREFACE = b"PRI * HTTP/2.0"
TOKEN = "secret-token-never-in-clear"


class FirstBytes:
    """Listens on 0.0.0.0 and keeps the first bytes of each connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.got = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                try:
                    while len(data) < 4096:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                        if data.startswith(b"\x16") or len(data) > 200:
                            break
                except OSError:
                    pass
                self.received.append(data)
                self.got.set()

    def first(self, timeout: float = 30) -> bytes:
        assert self.got.wait(timeout), "nobody connected"
        return self.received[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[FirstBytes]:
    server = FirstBytes()
    yield server
    server.close()


def remote(port: int) -> str:
    """This host by name: an address that is not loopback by its spelling."""
    return f"{socket.gethostname()}:{port}"


def test_the_rule_tls_unless_loopback_or_explicitly_plaintext() -> None:
    for local in (
        "127.0.0.1:7443",
        "[::1]:7443",
        "localhost:7443",
        "unix:///run/a.sock",
        "ipv4:127.0.0.1:7443,127.0.0.2:7443",
    ):
        assert is_local_address(local) and not use_tls(local, None)
    for far in (
        "10.0.0.5:7443",
        "server.example:7443",
        "[2001:db8::1]:7443",
        "0.0.0.0:1",
        "ipv4:127.0.0.1:7443,10.0.0.5:7443",
        "dns:///server.example:7443",
    ):
        assert not is_local_address(far) and use_tls(far, None)
    assert not use_tls("server.example:7443", False)  # the caller's explicit choice
    assert use_tls("127.0.0.1:7443", True)


def _sends_tls(listener: FirstBytes, call: Callable[[], object]) -> bytes:
    with contextlib.suppress(Exception):  # the listener speaks no TLS: the call fails
        call()
    return listener.first()


def test_the_server_client_dials_tls_to_a_remote_address_by_default(
    listener: FirstBytes,
) -> None:
    client = Client(remote(listener.port), token=TOKEN, timeout=3)
    assert client.secure
    with client:
        first = _sends_tls(listener, client.programs.list)
    assert first.startswith(b"\x16\x03") and TOKEN.encode() not in first


def test_plaintext_to_a_remote_address_only_when_asked(listener: FirstBytes) -> None:
    with Client(remote(listener.port), token=TOKEN, tls=False, timeout=3) as client:
        first = _sends_tls(listener, client.programs.list)
    assert first.startswith(HTTP2_PREFACE)


def test_the_cli_dials_tls_to_a_remote_address_by_default(listener: FirstBytes) -> None:
    from spikefleet.cli.main import main

    main(["--server", remote(listener.port), "--token", TOKEN, "programs", "list"])
    first = listener.first()
    assert first.startswith(b"\x16\x03") and TOKEN.encode() not in first


def test_the_agent_client_dials_tls_to_a_remote_address_by_default(
    listener: FirstBytes,
) -> None:
    with AgentClient(remote(listener.port), token=TOKEN, timeout=3) as client:
        first = _sends_tls(listener, client.status)
    assert first.startswith(b"\x16\x03") and TOKEN.encode() not in first


def test_the_agent_control_channel_dials_tls_to_a_remote_server_by_default(
    listener: FirstBytes, tmp_path: Path
) -> None:
    from support.agent import make_key

    from spikefleet_agent.config import AgentConfig, InferenceConfig, ServerConfig
    from spikefleet_agent.daemon import Agent

    make_key(tmp_path / "keys")
    (tmp_path / "agent.token").write_text(TOKEN)
    (tmp_path / "agent.token").chmod(0o600)
    config = AgentConfig(
        agent_id="edge-1",
        state_dir=tmp_path / "state",
        lock_dir=tmp_path / "locks",
        trusted_keys=[tmp_path / "keys"],
        server=ServerConfig(
            address=remote(listener.port), token_file=str(tmp_path / "agent.token")
        ),
        inference=InferenceConfig(address="127.0.0.1:0"),
    ).validate()
    agent = Agent(config, pci_root=tmp_path / "none").start()
    try:
        first = listener.first()
    finally:
        agent.stop()
    assert first.startswith(b"\x16\x03") and TOKEN.encode() not in first
