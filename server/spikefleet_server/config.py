"""spikefleet-server configuration: defaults < TOML file < environment < flags.

Every setting has an environment override ``SPIKEFLEET_SERVER_<KEY>`` (nested
keys joined by ``_``, e.g. ``SPIKEFLEET_SERVER_TLS_CERT``). Tokens are stored
as sha256 digests so the config file never holds a usable secret::

    [[tokens]]
    name = "ci"
    role = "deployer"
    sha256 = "<hex sha256 of the token>"   # spikefleet-server token create

An ``agent`` token may name the agent ids it can register as (shell patterns), so
one stolen edge token cannot impersonate the rest of the fleet::

    [[tokens]]
    name = "edge-01"
    role = "agent"
    sha256 = "..."
    agents = ["edge-01"]
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from spikefleet.client.tls import is_loopback_host
from spikefleet.errors import ServerConfigError
from spikefleet_server.auth import Role

ENV_PREFIX = "SPIKEFLEET_SERVER_"

FLEET = "spikefleet_server.fleet"
ROLLOUTS = "spikefleet_server.rollouts"
DEFAULT_EXTENSIONS = (FLEET, ROLLOUTS)
"""The areas served besides conversion and the registry (``ServerApp`` wires each)."""


MAX_PENDING_CALLS = 10_000
"""New calls gRPC holds for the event loop to take up before it resets them: several
times the 2,000 agents docs/scaling.md plans per replica (a dead peer's agents all
redial at once), and still a bound on what a flood of streams can queue."""

GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    # No bandwidth-delay probing of what agents send: after data arrives on a connection
    # the server would send a PING (and handle its ack) to size its receive window. A
    # fleet's connections each carry a few small messages every few seconds, so that
    # was a ping round per message: half the server's gRPC I/O threads' CPU and a good
    # part of the agents'. Big uploads (Convert, registry put) get a fixed 4 MiB
    # window instead, enough for 40 MB/s at 100 ms round trip; downloads (programs to
    # agents) are sized by the receiving agent's own probing and are unaffected.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 4 * 1024 * 1024),
    # A reconnect storm (a replica died: thousands of its agents redial this one within a
    # second) puts more new streams in gRPC's queue of calls not yet taken up by the
    # event loop than its default 1,000 (hard limit 3,000): past that gRPC resets new
    # streams at random (RST_STREAM NO_ERROR, no status, nothing logged here), the
    # agents see CANCELLED or INTERNAL before Registered and back off for seconds. Room
    # for a large replica's whole fleet: the calls wait their turn instead.
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
)
"""gRPC server options every server uses, whatever its settings."""

DEFAULT_LISTENERS = 4
MAX_LISTENERS = 64


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    agents: tuple[str, ...] = ()  # agent tokens: ids it may register as (patterns); () = any


DATABASE_ENV = "SPIKEFLEET_DATABASE_URL"
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the state lives: "" is the SQLite file in data_dir (one server); replicas
    share one PostgreSQL, ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (docs/scaling.md)."""

    url: str = ""


@dataclass(frozen=True)
class TLSConfig:
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None  # set: clients must present a certificate it signed (mTLS)


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:7443"
    data_dir: Path = Path("/var/lib/spikefleet-server")
    insecure_loopback: bool = False
    signing_key: Path | None = None  # default: <data_dir>/keys/signing.key
    trusted_keys_dir: Path | None = None  # extra .pub files agents should trust (key rotation)
    max_upload_bytes: int = 64 * 1024 * 1024
    workers: int = 1
    convert_timeout_seconds: float = 900.0  # from a job's start in a worker; 0 = none
    grpc_threads: int = 16  # storage threads: the blocking work (database, files) of calls
    # Close each client connection after this long (gRPC GOAWAY, then a grace of a tenth
    # of it, 1-60 s): agents redial, so a fleet rebalances over replicas added since.
    # 0 = never (one server); replicas behind one address want e.g. 1800.
    max_connection_age_seconds: float = 0.0
    # gRPC servers in this process sharing the listen address (SO_REUSEPORT; the kernel
    # spreads new connections over them): each takes up one new call per method at a
    # time in its own accept loop, so several take a reconnect storm's calls up faster
    # on a busy event loop. One event loop still runs them all (docs/server.md).
    listeners: int = DEFAULT_LISTENERS
    metrics_listen: str = ""  # e.g. "127.0.0.1:9464"; "" = no metrics endpoint
    # Plaintext gRPC health only (grpc.health.v1, no other service), for probes that
    # cannot speak TLS, such as Kubernetes' grpc probe; e.g. "0.0.0.0:8081"; "" = none.
    health_listen: str = ""
    drain_seconds: float = 30.0
    log_level: str = "info"
    # per agent (see spikefleet_server.fleet.limits and docs/security.md); 0 turns one off
    telemetry_max_batch_bytes: int = 64 * 1024
    telemetry_rate_bytes_per_s: int = 64 * 1024
    telemetry_retention_days: float = 30.0
    telemetry_max_batches_per_agent: int = 600_000
    db_upgrade: bool = True  # migrate the database's schema at start (else refuse an old one)
    tls: TLSConfig = field(default_factory=TLSConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    tokens: tuple[TokenEntry, ...] = ()
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS

    def grpc_options(self) -> list[tuple[str, int]]:
        """gRPC server channel options these settings imply (and :data:`GRPC_OPTIONS`)."""
        options = list(GRPC_OPTIONS)
        if self.listeners > 1:  # several sockets on one port (gRPC's default on Linux)
            options.append(("grpc.so_reuseport", 1))
        age = self.max_connection_age_seconds
        if age <= 0:
            return options
        grace = min(60.0, max(1.0, age / 10))
        return [
            *options,
            ("grpc.max_connection_age_ms", max(1, round(age * 1000))),
            ("grpc.max_connection_age_grace_ms", round(grace * 1000)),
        ]

    @property
    def database_target(self) -> str | Path:
        """The database URL, or the SQLite file in data_dir when none is set."""
        return self.database.url or self.data_dir / "spikefleet.db"

    @property
    def replicated(self) -> bool:
        """On PostgreSQL: other replicas may share the database."""
        return self.database.url.startswith(("postgresql", "postgres:"))

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.data_dir / "keys" / "signing.key"

    def check(self) -> ServerConfig:
        """Refuse unsafe or impossible combinations, naming the fix."""
        host, _ = split_address(self.listen)
        if self.tls.cert is None or self.tls.key is None:
            if not self.insecure_loopback:
                raise ServerConfigError(
                    "no TLS certificate: set tls.cert and tls.key, or, on a loopback address "
                    "only, pass --insecure-loopback"
                )
            if not is_loopback_host(host):
                raise ServerConfigError(
                    f"--insecure-loopback needs a loopback listen address, not {self.listen!r}: "
                    "configure tls.cert and tls.key to listen there"
                )
        elif self.insecure_loopback:
            raise ServerConfigError("both TLS and --insecure-loopback given: choose one")
        if self.tls.client_ca is not None and self.tls.cert is None:
            raise ServerConfigError("tls.client_ca (mTLS) needs tls.cert and tls.key too")
        for path in (self.tls.cert, self.tls.key, self.tls.client_ca):
            if path is not None and not path.is_file():
                raise ServerConfigError(f"TLS file {path} does not exist")
        if self.max_upload_bytes <= 0:
            raise ServerConfigError("max_upload_bytes must be positive")
        url = self.database.url
        if url and not url.startswith(DATABASE_SCHEMES):
            shown = url.split("://", 1)[0] + "://..." if "://" in url else repr(url)
            raise ServerConfigError(
                f"database url {shown} is not a database URL: use sqlite:///PATH or "
                "postgresql://USER:PASSWORD@HOST:PORT/DB"
            )
        if self.max_connection_age_seconds < 0:
            raise ServerConfigError("max_connection_age_seconds must be >= 0 (0 = never)")
        for key in (
            "telemetry_max_batch_bytes",
            "telemetry_rate_bytes_per_s",
            "telemetry_retention_days",
            "telemetry_max_batches_per_agent",
        ):
            if getattr(self, key) < 0:
                raise ServerConfigError(f"{key} must be >= 0 (0 turns the limit off)")
        if 0 < self.telemetry_rate_bytes_per_s < 1024:
            raise ServerConfigError(
                "telemetry_rate_bytes_per_s below 1024 would starve agents: use >= 1024 or 0"
            )
        if not 1 <= self.listeners <= MAX_LISTENERS:
            raise ServerConfigError(
                f"listeners must be between 1 and {MAX_LISTENERS} (gRPC servers on the listen "
                f"address in this process), not {self.listeners}"
            )
        if self.workers < 1 or self.grpc_threads < 2:
            raise ServerConfigError("workers must be >= 1 and grpc_threads >= 2")
        if self.metrics_listen:
            split_address(self.metrics_listen)
        if self.health_listen:
            split_address(self.health_listen)
        return self


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ServerConfigError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _coerce(key: str, value: Any, kind: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if "bool" in kind_name:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if "int" in kind_name:
            return int(value)
        if "float" in kind_name:
            return float(value)
        if "Path" in kind_name:
            return Path(value) if str(value) else None
        return str(value)
    except (TypeError, ValueError):
        raise ServerConfigError(f"setting {key}: {value!r} is not a valid {kind_name}") from None


def _tokens(raw: Any) -> tuple[TokenEntry, ...]:
    if not isinstance(raw, list):
        raise ServerConfigError("tokens must be a list of tables ([[tokens]])")
    entries = []
    for i, item in enumerate(raw):
        try:
            name, role, digest = str(item["name"]), Role.parse(item["role"]), str(item["sha256"])
        except (KeyError, TypeError):
            raise ServerConfigError(f"tokens[{i}] needs name, role and sha256") from None
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ServerConfigError(f"tokens[{i}] ({name}): sha256 must be 64 lowercase hex")
        agents = item.get("agents", [])
        if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
            raise ServerConfigError(
                f"tokens[{i}] ({name}): agents must be a list of agent ids or patterns"
            )
        if agents and role is not Role.AGENT:
            raise ServerConfigError(
                f"tokens[{i}] ({name}): agents only applies to role agent, not {role.value}"
            )
        entries.append(TokenEntry(name, role, digest, tuple(agents)))
    return tuple(entries)


def _apply(config: ServerConfig, values: Mapping[str, Any], source: str) -> ServerConfig:
    top = {f.name: f for f in fields(ServerConfig)}
    tls_fields = {f.name: f for f in fields(TLSConfig)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "tokens":
            changes["tokens"] = _tokens(value)
        elif key == "extensions":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ServerConfigError(f"{source}: extensions must be a list of module names")
            chosen = tuple(i.strip() for i in items if i.strip())
            unknown = [name for name in chosen if name not in DEFAULT_EXTENSIONS]
            if unknown:
                raise ServerConfigError(
                    f"{source}: unknown extension {unknown[0]!r}: the areas are "
                    + ", ".join(DEFAULT_EXTENSIONS)
                )
            if ROLLOUTS in chosen and FLEET not in chosen:
                raise ServerConfigError(f"{source}: extension {ROLLOUTS} needs {FLEET} too")
            changes["extensions"] = chosen
        elif key == "tls":
            if not isinstance(value, Mapping):
                raise ServerConfigError(f"{source}: tls must be a table")
            tls = {}
            for sub, subvalue in value.items():
                if sub not in tls_fields:
                    raise ServerConfigError(f"{source}: unknown setting tls.{sub}")
                tls[sub] = _coerce(f"tls.{sub}", subvalue, tls_fields[sub].type)
            changes["tls"] = replace(changes.get("tls", config.tls), **tls)
        elif key == "database":
            if not isinstance(value, Mapping):
                raise ServerConfigError(f"{source}: database must be a table ([database] url)")
            unknown = sorted(set(value) - {"url"})
            if unknown:
                raise ServerConfigError(f"{source}: unknown setting database.{unknown[0]}")
            if "url" in value:
                changes["database"] = DatabaseConfig(str(value["url"]).strip())
        elif key in top:
            coerced = _coerce(key, value, top[key].type)
            if key == "data_dir" and coerced is None:
                raise ServerConfigError(f"{source}: data_dir must not be empty")
            changes[key] = coerced
        else:
            raise ServerConfigError(f"{source}: unknown setting {key!r}")
    return replace(config, **changes)


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    tls_names = {f.name for f in fields(TLSConfig)}
    if DATABASE_ENV in environ:  # the name deployments and docs use
        values["database"] = {"url": environ[DATABASE_ENV]}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key.startswith("tls_") and key[4:] in tls_names:
            values.setdefault("tls", {})[key[4:]] = value
        elif key == "database_url":
            values["database"] = {"url": value}
        elif key == "tokens":
            raise ServerConfigError(f"{name}: tokens can only be set in the config file")
        else:
            values[key] = value
    return values


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    check: bool = True,
) -> ServerConfig:
    """The configuration from these sources; ``check`` False skips the serving checks
    (TLS, listen address) for commands that only open the data dir."""
    config = ServerConfig()
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ServerConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ServerConfigError(f"config file {path} is not valid TOML: {exc}") from None
        config = _apply(config, data, str(path))
    config = _apply(config, from_env(os.environ if environ is None else environ), "environment")
    if overrides:
        config = _apply(config, {k: v for k, v in overrides.items() if v is not None}, "flags")
    return config.check() if check else config
