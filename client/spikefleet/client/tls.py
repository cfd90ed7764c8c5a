"""TLS for every channel that leaves the host: the one rule all spikefleet clients follow.

A channel is TLS unless its address is local (a loopback host or a unix socket)
and no TLS setting is given, or the caller chose plaintext explicitly
(``tls=False``). With TLS and no CA, the system roots verify the server, so a
server with a public certificate needs no setting at all; ``cert`` + ``key``
present a client certificate (mTLS). The server CLI, the Python clients and the
agent's control channel all dial through :func:`open_channel`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from spikefleet.errors import SpikefleetError
from spikefleet.secret_files import read_secret


@dataclass(frozen=True)
class ClientTLS:
    """Verify the server with ``ca`` (system roots when None); ``cert``/``key`` for mTLS;
    ``server_name`` overrides the name checked against the certificate."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


def host_of(address: str) -> str:
    """The host part of ``host:port``, ``[v6]:port``, ``dns:///host:port`` or ``ipv4:...``."""
    target = address
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(prefix):
            target = target[len(prefix) :]
            break
    if target.startswith("["):
        return target[1 : target.find("]")] if "]" in target else target
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return target
    return host


def is_local_address(address: str) -> bool:
    """Whether ``address`` never leaves the host: a unix socket or a loopback host (for
    gRPC's ``ipv4:a:p,b:p`` lists, every address in the list)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    for prefix in ("ipv4:", "ipv6:"):
        if address.startswith(prefix) and "," in address:
            parts = address[len(prefix) :].split(",")
            return all(is_local_address(prefix + part.strip()) for part in parts)
    return is_loopback_host(host_of(address))


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address (a bare host, no port)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def use_tls(address: str, tls: ClientTLS | bool | None) -> bool:
    """None (the default): TLS unless the address is local; True/ClientTLS: TLS; False:
    plaintext, the caller's explicit choice."""
    if tls is None:
        return not is_local_address(address)
    return tls is not False


def credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    def read(path: Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        if what == "TLS key":
            return read_secret(path, what)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SpikefleetError(f"cannot read TLS file {path}: {exc.strerror}") from None

    if (tls.cert is None) != (tls.key is None):
        raise SpikefleetError("mTLS needs both a client certificate and its key")
    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca, "TLS CA"),
        private_key=read(tls.key, "TLS key"),
        certificate_chain=read(tls.cert, "TLS certificate"),
    )


def channel_options(tls: ClientTLS | None) -> list[tuple[str, Any]]:
    if tls is not None and tls.server_name:
        return [("grpc.ssl_target_name_override", tls.server_name)]
    return []


def open_channel(
    address: str,
    tls: ClientTLS | bool | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    aio: bool = False,
) -> Any:
    """A grpc (or grpc.aio) channel to ``address`` following the TLS rule above."""
    if not use_tls(address, tls):
        if aio:
            return grpc.aio.insecure_channel(address, options=list(options))
        return grpc.insecure_channel(address, options=list(options))
    settings = tls if isinstance(tls, ClientTLS) else ClientTLS()
    creds = credentials(settings)
    all_options = [*options, *channel_options(settings)]
    if aio:
        return grpc.aio.secure_channel(address, creds, options=all_options)
    return grpc.secure_channel(address, creds, options=all_options)


def environment_tls(environ: Mapping[str, str]) -> ClientTLS | bool | None:
    """TLS settings from SPIKEFLEET_TLS_CA/_CERT/_KEY/_SERVER_NAME, or False when
    SPIKEFLEET_PLAINTEXT=1 chooses plaintext, or None (the default rule)."""
    if environ.get("SPIKEFLEET_PLAINTEXT", "").lower() in ("1", "true", "yes", "on"):
        return False

    def path(name: str) -> Path | None:
        value = environ.get(name)
        return Path(value) if value else None

    tls = ClientTLS(
        ca=path("SPIKEFLEET_TLS_CA"),
        cert=path("SPIKEFLEET_TLS_CERT"),
        key=path("SPIKEFLEET_TLS_KEY"),
        server_name=environ.get("SPIKEFLEET_TLS_SERVER_NAME") or None,
    )
    return None if tls == ClientTLS() else tls
