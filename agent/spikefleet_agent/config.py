"""The agent's TOML configuration, read once at start into plain dataclasses."""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from spikefleet.client.tls import ClientTLS, is_local_address
from spikefleet.errors import AgentConfigError
from spikefleet.program.validate import DEFAULT_MAX_ENGINE_BYTES
from spikefleet.secret_files import warn_if_exposed
from spikefleet_agent.device.factory import BACKENDS


@dataclass
class ServerConfig:
    # "host:port", or a list of them (replicas, tried in turn); "" runs standalone
    address: str | list[str] = ""
    token_file: str = ""
    # TLS to every non-loopback address: the server's CA (PEM; "" = the system roots),
    # a client certificate and key for an mTLS server, the name to check on its certificate
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""
    plaintext: bool = False  # dial without TLS even off the host (your explicit choice)
    heartbeat_interval_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    @property
    def addresses(self) -> list[str]:
        """The server addresses to fail over between; empty when standalone."""
        if isinstance(self.address, str):
            return [self.address] if self.address else []
        return list(self.address)

    def tls(self) -> ClientTLS | bool | None:
        """How to dial: False (plaintext, chosen), ClientTLS (settings), None (the rule:
        TLS unless loopback)."""
        if self.plaintext:
            return False
        settings = ClientTLS(
            ca=Path(self.tls_ca) if self.tls_ca else None,
            cert=Path(self.tls_cert) if self.tls_cert else None,
            key=Path(self.tls_key) if self.tls_key else None,
            server_name=self.tls_server_name or None,
        )
        return None if settings == ClientTLS() else settings

    def validate(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise AgentConfigError(
                "[server] tls_cert and tls_key go together (the agent's client certificate "
                "for an mTLS server): set both or neither"
            )
        if self.plaintext and (self.tls_ca or self.tls_cert):
            raise AgentConfigError("[server] plaintext = true and TLS settings: choose one")
        address = self.address
        if isinstance(address, str):
            return
        if (
            not isinstance(address, list)
            or not address
            or not all(isinstance(a, str) and a.strip() for a in address)
        ):
            raise AgentConfigError(
                f'[server] address must be one "host:port" or a non-empty list of them '
                f'(address = ["a.example:7443", "b.example:7443"]), not {address!r}'
            )
        if len(set(address)) != len(address):
            raise AgentConfigError(f"[server] address lists a server twice: {address!r}")


@dataclass
class InferenceConfig:
    address: str = "127.0.0.1:50061"  # or "unix:///run/spikefleet-agent/inference.sock"
    token_file: str = ""  # required unless the address is loopback or a unix socket
    max_workers: int = 8
    max_streams: int = 64
    max_message_bytes: int = 16 * 1024 * 1024
    max_open_samples: int = 1024  # per stream
    event_window_us: int = 10_000  # time window for programs that record no input spec
    max_frames_per_packet: int = 256  # frames one event packet may complete
    max_sensor_pixels: int = 4096 * 4096  # sensor a stream's events may come from
    max_stream_bytes: int = 64 * 1024 * 1024  # buffered events + filter state per stream
    # TLS for the API (PEM certificate and key); tls_client_ca: require client certificates
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    plaintext: bool = False  # serve a non-local address without TLS (your explicit choice)

    def validate(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise AgentConfigError("[inference] tls_cert and tls_key go together: set both")
        if self.tls_client_ca and not self.tls_cert:
            raise AgentConfigError("[inference] tls_client_ca (mTLS) needs tls_cert and tls_key")
        if _is_local(self.address):
            return
        if not self.token_file:
            raise AgentConfigError(
                f"inference.address {self.address} is reachable from other hosts: "
                "set inference.token_file, or listen on 127.0.0.1 or a unix socket"
            )
        if not self.tls_cert and not self.plaintext:
            raise AgentConfigError(
                f"inference.address {self.address} is reachable from other hosts: set "
                "inference.tls_cert and tls_key (its token would travel in clear), or "
                "plaintext = true if the network is yours"
            )


@dataclass
class TelemetryConfig:
    interval_s: float = 5.0
    spool_max_batches: int = 100_000
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = no /metrics endpoint


@dataclass
class AgentConfig:
    agent_id: str = field(default_factory=socket.gethostname)
    state_dir: Path = Path("/var/lib/spikefleet-agent")
    backend: str = "sim"
    device_index: int = 0
    lock_dir: Path = Path("/run/lock/spikefleet")
    trusted_keys: list[Path] = field(default_factory=list)  # files or directories
    labels: dict[str, str] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    # programs whose engine would need more memory are refused on install (0 = no cap)
    max_engine_bytes: int = DEFAULT_MAX_ENGINE_BYTES

    def validate(self) -> AgentConfig:
        self.server.validate()
        if self.backend not in BACKENDS:
            raise AgentConfigError(
                f"backend {self.backend!r} is unknown: choose one of {', '.join(BACKENDS)}"
            )
        if isinstance(self.max_engine_bytes, bool) or not isinstance(self.max_engine_bytes, int):
            raise AgentConfigError("max_engine_bytes must be a number of bytes (0 = no cap)")
        if self.max_engine_bytes < 0:
            raise AgentConfigError("max_engine_bytes must be >= 0 (0 = no cap)")
        if not self.agent_id:
            raise AgentConfigError("agent_id is empty: set agent_id in the config")
        if not self.trusted_keys:
            raise AgentConfigError(
                "trusted_keys is empty: pin the server's program-signing public key(s) "
                '(trusted_keys = ["/etc/spikefleet/keys"]) so programs can be verified'
            )
        for key in ("max_frames_per_packet", "max_sensor_pixels", "max_stream_bytes"):
            value = getattr(self.inference, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AgentConfigError(f"inference.{key} must be a positive integer, got {value!r}")
        self.inference.validate()
        return self


def check_files(config: AgentConfig) -> None:
    """The TLS and token files the config names exist (check-config; not at parse time, so
    an example config can be validated away from its host)."""
    for section, names in (
        ("server", ("token_file", "tls_ca", "tls_cert", "tls_key")),
        ("inference", ("token_file", "tls_cert", "tls_key", "tls_client_ca")),
    ):
        for name in names:
            value = getattr(getattr(config, section), name)
            if value and not Path(value).is_file():
                raise AgentConfigError(f"[{section}] {name} {value} does not exist")


def _is_local(address: str) -> bool:
    return is_local_address(address)


def _section(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AgentConfigError(
            f"unknown key(s) {', '.join(unknown)} in {where}: "
            f"known keys are {', '.join(sorted(known))}"
        )
    return cls(**data)


def parse_config(data: dict[str, Any], base: Path = Path(".")) -> AgentConfig:
    """Build a validated AgentConfig; relative paths are relative to ``base``."""
    data = dict(data)
    nested = {
        "server": ServerConfig,
        "inference": InferenceConfig,
        "telemetry": TelemetryConfig,
    }
    kwargs: dict[str, Any] = {}
    for key, cls in nested.items():
        section = data.pop(key, {})
        if not isinstance(section, dict):
            raise AgentConfigError(f"[{key}] must be a table")
        kwargs[key] = _section(cls, section, f"[{key}]")
    try:
        config = _section(AgentConfig, {**data, **kwargs}, "the top level")
    except TypeError as exc:
        raise AgentConfigError(f"bad config: {exc}") from exc
    config.state_dir = base / Path(config.state_dir)
    config.lock_dir = base / Path(config.lock_dir)
    config.trusted_keys = [base / Path(p) for p in config.trusted_keys]
    config.labels = {str(k): str(v) for k, v in dict(config.labels).items()}
    for attr in ("token_file", "tls_ca", "tls_cert", "tls_key"):
        value = getattr(config.server, attr)
        if value:
            setattr(config.server, attr, str(base / value))
    for attr in ("token_file", "tls_cert", "tls_key", "tls_client_ca"):
        value = getattr(config.inference, attr)
        if value:
            setattr(config.inference, attr, str(base / value))
    return config.validate()


def load_config(path: Path) -> AgentConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AgentConfigError(
            f"config file {path} does not exist: copy deploy/agent/agent.toml and edit it"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data, path.parent)


def read_token(path: str) -> str:
    if not path:
        return ""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise AgentConfigError(f"cannot read token file {path}: {exc.strerror}") from exc
    warn_if_exposed(path, "token file")
    if not token:
        raise AgentConfigError(f"token file {path} is empty")
    return token
