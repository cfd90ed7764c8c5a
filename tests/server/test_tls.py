"""TLS always off loopback; mTLS when a client CA is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.certs import CertificateAuthority
from support.server import TOKENS, running_server

from spikefleet.client import Client, ClientTLS
from spikefleet.errors import ServerUnavailableError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    return {
        "ca": ca,
        "server": ca.issue("server", server=True),
        "client": ca.issue("edge-client", server=False),
        "rogue_ca": CertificateAuthority(directory / "rogue", "rogue CA"),
    }


def tls_settings(pki: dict, mtls: bool) -> dict[str, object]:
    server = pki["server"]
    tls: dict[str, object] = {"cert": server.cert, "key": server.key}
    if mtls:
        tls["client_ca"] = pki["ca"].path
    return {"insecure_loopback": False, "tls": tls}


def assert_refused(address: str, tls: ClientTLS | bool) -> None:
    client = Client(address, token=TOKENS["viewer"], tls=tls, timeout=5)
    with client, pytest.raises(ServerUnavailableError):
        client.programs.list()


def test_tls_serves_clients_that_trust_its_ca_only(tmp_path: Path, pki):
    with running_server(tmp_path / "data", **tls_settings(pki, mtls=False)) as app:
        address = f"127.0.0.1:{app.port}"
        with Client(address, token=TOKENS["viewer"], tls=ClientTLS(ca=pki["ca"].path)) as client:
            assert client.programs.list() == []
        assert_refused(address, False)
        assert_refused(address, ClientTLS(ca=pki["rogue_ca"].path))


def test_mtls_requires_a_client_certificate_from_the_client_ca(tmp_path: Path, pki):
    with running_server(tmp_path / "data", **tls_settings(pki, mtls=True)) as app:
        address = f"127.0.0.1:{app.port}"
        issued = pki["client"]
        with_cert = ClientTLS(ca=pki["ca"].path, cert=issued.cert, key=issued.key)
        with Client(address, token=TOKENS["viewer"], tls=with_cert) as client:
            assert client.programs.list() == []
        assert_refused(address, ClientTLS(ca=pki["ca"].path))
