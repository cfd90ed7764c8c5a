"""spikefleet-server and spikefleet-agent as real child processes on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from spikefleet.program.codec import encode
from spikefleet.program.model import Program
from spikefleet.program.signing import SigningKey
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet_server.config import hash_token
from spikefleet_server.keys import load_or_create
from spikefleet_server.registry import Registry
from spikefleet_server.storage import open_database
from spikefleet_server.telemetry import TelemetryRecord, TelemetryStore
from support.processes import BIN, Child, ServerProcess

AGENT_TOKEN = "agent-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"


@dataclass
class ServerSetup:
    """A server data dir with programs in its registry and tokens in its config."""

    root: Path
    programs: dict[str, str] = field(default_factory=dict)  # name -> sha256
    children: list[Child] = field(default_factory=list)  # stopped at the end, pass or fail
    database: str = ""  # a PostgreSQL URL shared by replicas; "" = SQLite in the data dir

    @property
    def database_target(self) -> str | Path:
        return self.database or self.data_dir / "spikefleet.db"

    @property
    def data_dir(self) -> Path:
        return self.root / "server"

    @property
    def keys_dir(self) -> Path:
        return self.root / "trusted"

    @classmethod
    @contextmanager
    def prepared(cls, root: Path, programs: dict[str, Program]) -> Iterator[ServerSetup]:
        """Prepared in ``root``; its children are stopped at the end, pass or fail."""
        setup = cls(root).prepare(programs)
        try:
            yield setup
        finally:
            for child in setup.children:
                child.stop()

    def prepare(self, programs: dict[str, Program]) -> ServerSetup:
        key = load_or_create(self.data_dir / "keys" / "signing.key")
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        key.public_key.save(self.keys_dir / "server.pub")
        self.store(programs, key)
        tokens = "".join(
            f'[[tokens]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
            for name, role, token in (
                ("edge", "agent", AGENT_TOKEN),
                ("ops", "admin", ADMIN_TOKEN),
            )
        )
        # agents' Connect streams never end by themselves: a long drain would only wait
        (self.root / "server.toml").write_text("drain_seconds = 1.0\n" + tokens)
        return self

    def store(self, programs: dict[str, Program], key: SigningKey) -> dict[str, str]:
        """Put ``programs`` in the registry signed by ``key``, as a server signing with it
        would; returns and remembers name -> sha256."""
        db = open_database(self.database_target)
        try:
            registry = Registry(self.data_dir / "programs", db, key)
            stored = {
                n: asyncio.run(registry.put(encode(p), name=n)).sha256 for n, p in programs.items()
            }
        finally:
            db.close()
        self.programs.update(stored)
        return stored

    def telemetry(self, agent_id: str) -> list[TelemetryRecord]:
        """The telemetry stored for ``agent_id``, in seq order."""
        db = open_database(self.database_target)
        try:
            return asyncio.run(TelemetryStore(db).of_agent(agent_id))
        finally:
            db.close()

    def program_file(self, sha256: str) -> Path:
        return self.data_dir / "programs" / sha256[:2] / f"{sha256}.sfp"

    def start(self, port: int = 0, replica: str = "") -> ServerChild:
        """A server process; with ``replica``, one of several on :attr:`database` (its own
        scratch data dir, the shared signing key)."""
        argv = [
            str(BIN / "spikefleet-server"),
            "serve",
            "--config",
            str(self.root / "server.toml"),
            "--data-dir",
            str(self.root / f"replica-{replica}" if replica else self.data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--insecure-loopback",
        ]
        if self.database:
            argv += ["--database", self.database]
        if replica:
            argv += ["--signing-key", str(self.data_dir / "keys" / "signing.key")]
        return ServerChild(argv)


class ServerChild(ServerProcess):
    """A server the fleet tests assign programs through."""

    def assign(self, agent_id: str, sha256: str = "", **kwargs: object) -> int:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            reply = fleet_pb2_grpc.FleetAdminStub(channel).Assign(
                fleet_pb2.AssignRequest(agent_id=agent_id, sha256=sha256, **kwargs),
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
                timeout=30,
            )
        return int(reply.generation)


def write_agent_config(root: Path, agent_id: str, server_port: int, keys: Path) -> Path:
    (root / "agent.token").write_text(AGENT_TOKEN)
    config = {
        "agent_id": agent_id,
        "state_dir": str(root / agent_id),
        "lock_dir": str(root / f"{agent_id}-locks"),  # one sim device per agent
        "trusted_keys": [str(keys)],
    }
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    text += (
        f'[server]\naddress = "127.0.0.1:{server_port}"\ntoken_file = "agent.token"\n'
        "heartbeat_interval_s = 0.5\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\n"
        '[inference]\naddress = "127.0.0.1:0"\n'
        "[telemetry]\ninterval_s = 0.5\n"
    )
    path = root / f"{agent_id}.toml"
    path.write_text(text)
    return path


class AgentChild(Child):
    def __init__(self, config: Path) -> None:
        super().__init__([str(BIN / "spikefleet-agent"), "run", "--config", str(config)])
        port = self.wait_for(r'"inference_port": (\d+)').group(1)
        self.address = f"127.0.0.1:{port}"
