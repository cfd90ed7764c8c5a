"""A Client from the CLI's global options and the environment.

``--server``/``SPIKEFLEET_SERVER`` gives the address, ``--token``/``SPIKEFLEET_TOKEN``
the token. TLS is used unless the address is loopback and no CA is given;
``SPIKEFLEET_TLS_CA`` (CA bundle), ``SPIKEFLEET_TLS_CERT`` + ``SPIKEFLEET_TLS_KEY``
(mTLS) and ``SPIKEFLEET_TLS_SERVER_NAME`` configure it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from spikefleet.client.client import Client, ClientTLS
from spikefleet.errors import SpikefleetError

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "[::1]", "localhost")


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def client_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Client:
    env = os.environ if environ is None else environ
    address = getattr(args, "server", None) or env.get("SPIKEFLEET_SERVER")
    if not address:
        raise SpikefleetError(
            "no server given: pass --server HOST:PORT (before the command) or set SPIKEFLEET_SERVER"
        )
    token = getattr(args, "token", None) or env.get("SPIKEFLEET_TOKEN")
    host = address.rpartition(":")[0] or address
    tls = ClientTLS(
        ca=_path(env.get("SPIKEFLEET_TLS_CA")),
        cert=_path(env.get("SPIKEFLEET_TLS_CERT")),
        key=_path(env.get("SPIKEFLEET_TLS_KEY")),
        server_name=env.get("SPIKEFLEET_TLS_SERVER_NAME") or None,
    )
    plaintext = host in LOOPBACK_HOSTS and tls == ClientTLS()
    return Client(address, token=token, tls=False if plaintext else tls)
