"""A Client from the CLI's global options and the environment.

``--server``/``SPIKEFLEET_SERVER`` gives the address, ``--token``/``SPIKEFLEET_TOKEN``
the token. TLS is used unless the address is loopback and no TLS setting is
given (see :mod:`spikefleet.client.tls`); ``SPIKEFLEET_TLS_CA`` (CA bundle),
``SPIKEFLEET_TLS_CERT`` + ``SPIKEFLEET_TLS_KEY`` (mTLS) and
``SPIKEFLEET_TLS_SERVER_NAME`` configure it, and ``SPIKEFLEET_PLAINTEXT=1``
chooses plaintext explicitly (the server accepts it on loopback only).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from spikefleet.client.client import Client
from spikefleet.client.tls import environment_tls
from spikefleet.errors import SpikefleetError


def client_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Client:
    env = os.environ if environ is None else environ
    address = getattr(args, "server", None) or env.get("SPIKEFLEET_SERVER")
    if not address:
        raise SpikefleetError(
            "no server given: pass --server HOST:PORT (before the command) or set SPIKEFLEET_SERVER"
        )
    token = getattr(args, "token", None) or env.get("SPIKEFLEET_TOKEN")
    return Client(address, token=token, tls=environment_tls(env))
