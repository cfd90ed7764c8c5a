"""How the CLI connects: plaintext only to loopback without TLS settings, else TLS."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from support.certs import CertificateAuthority
from support.server import TOKENS, running_server

from spikefleet.client.connect import client_from_args
from spikefleet.errors import ServerUnavailableError, SpikefleetError


def args(server: str | None, token: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(server=server, token=token)


def test_the_environment_gives_address_token_and_tls(tmp_path: Path):
    ca = CertificateAuthority(tmp_path / "pki")
    issued = ca.issue("server", server=True)
    tls = {"insecure_loopback": False, "tls": {"cert": issued.cert, "key": issued.key}}
    with running_server(tmp_path / "data", **tls) as app:
        env = {
            "SPIKEFLEET_SERVER": f"localhost:{app.port}",
            "SPIKEFLEET_TOKEN": TOKENS["viewer"],
            "SPIKEFLEET_TLS_CA": str(ca.path),
        }
        with client_from_args(args(None), env) as client:
            assert client.programs.list() == []
        plaintext = client_from_args(args(f"localhost:{app.port}", TOKENS["viewer"]), {})
        plaintext.timeout = 5
        with plaintext, pytest.raises(ServerUnavailableError):
            plaintext.programs.list()


def test_plaintext_is_chosen_only_for_loopback_without_tls_settings(tmp_path: Path):
    for address in ("spikefleet.example:7443", "10.0.0.5:7443"):
        with client_from_args(args(address, "t"), {}) as client:
            assert client.secure
    for address in ("127.0.0.1:7443", "localhost:7443", "[::1]:7443"):
        with client_from_args(args(address, "t"), {}) as client:
            assert not client.secure
    with_ca = {"SPIKEFLEET_TLS_CA": str(tmp_path / "ca.pem")}
    (tmp_path / "ca.pem").write_bytes(b"")
    with client_from_args(args("127.0.0.1:7443", "t"), with_ca) as client:
        assert client.secure
    with pytest.raises(SpikefleetError, match="pass --server HOST:PORT"):
        client_from_args(args(None), {})
