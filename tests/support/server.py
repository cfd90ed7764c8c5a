"""A real ServerApp serving on loopback from a thread, for synchronous tests and
benchmarks; tokens for every role; model files to convert.

``serving(config)`` / ``serve_app(app)`` run an app on a :class:`support.aio.LoopThread`;
``RunningServer.call`` runs one of its coroutines (``app.registry.put(...)``) on the
server's own loop, and ``running_server`` yields the app with its coroutines made blocking.
"""

from __future__ import annotations

import pickle
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from safetensors.numpy import save_file

from spikefleet.client import Client
from spikefleet.program.codec import encode
from spikefleet_server import logs
from spikefleet_server.app import ServerApp
from spikefleet_server.config import ServerConfig, hash_token, load_config
from spikefleet_server.storage import database_url
from support.aio import Blocking, LoopThread
from support.program_factory import small_program

T = TypeVar("T")


class RunningServer:
    def __init__(self, app: ServerApp, loop: LoopThread) -> None:
        self.app = app
        self.loop = loop

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return self.loop.run(coro)


@contextmanager
def serving(config: ServerConfig, grace: float | None = None) -> Iterator[RunningServer]:
    """Build, start, and at the end stop (``grace``: the config's drain) a ServerApp."""
    with serve_app(ServerApp(config), grace) as running:
        yield running


@contextmanager
def serve_app(app: ServerApp, grace: float | None = None) -> Iterator[RunningServer]:
    """Start an app built (and added to) in the test, on a loop thread; stop it at the end."""
    loop = LoopThread("server")
    try:
        try:
            loop.run(app.start())
        except BaseException:
            loop.run(app.stop(0))
            raise
        try:
            yield RunningServer(app, loop)
        finally:
            loop.run(app.stop(app.config.drain_seconds if grace is None else grace))
    finally:
        loop.close()


TOKENS = {"viewer": "viewer-token", "deployer": "deployer-token", "admin": "admin-token"}
TOKENS["agent"] = "agent-token"

FC_ARCH = "Input(8,8,2) FC(32) Leaky FC(10) Leaky"


def config_values(data_dir: Path, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "insecure_loopback": True,
        "tokens": [
            {"name": f"{role}-user", "role": role, "sha256": hash_token(token)}
            for role, token in TOKENS.items()
        ],
        "drain_seconds": 5,
    }
    values.update(extra)
    return values


@contextmanager
def running_server(data_dir: Path, **extra: Any) -> Iterator[Any]:
    """A real server on a loop thread; what it yields is the ServerApp with its coroutine
    methods made blocking (``app.registry.put(...)`` runs on the server's loop)."""
    logs.configure("info")  # JSON on stderr, as in production: stdout is the CLI's
    config = load_config(None, environ={}, overrides=config_values(data_dir, **extra))
    with serving(config, grace=5) as running:
        yield Blocking(running.app, running.call)


def client_for(app: Any, role: str | None = "deployer") -> Client:
    return Client(f"127.0.0.1:{app.port}", token=TOKENS[role] if role else None)


def fc_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(0, 0.3, (32, 128)).astype(np.float32),
        "fc1.bias": np.zeros(32, np.float32),
        "fc2.weight": rng.normal(0, 0.3, (10, 32)).astype(np.float32),
        "fc2.bias": np.zeros(10, np.float32),
    }


def fc_model(path: Path, seed: int = 0, poison: float | None = None) -> Path:
    """A state_dict of a small FC spiking net (convert with FC_ARCH); ``poison`` puts
    that value (NaN, Inf) into one weight."""
    weights = fc_weights(seed)
    if poison is not None:
        weights["fc2.weight"][3, 5] = poison
    save_file(weights, str(path))
    return path


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def malicious_pickle(path: Path, marker: Path) -> Path:
    """A .pt file whose unpickling would create ``marker``."""
    path.write_bytes(pickle.dumps({"fc1.weight": _RunsCode(marker)}, protocol=2))
    return path


@contextmanager
def running_app(data_dir: Path, database: str | Path | None = None) -> Iterator[Any]:
    """A real server with the fleet and rollouts (short drain, few storage threads) on a
    loop thread, as a ServerApp whose coroutines block. ``database``: a SQLite file or a
    PostgreSQL URL (see ``support.backends``; default: SQLite in ``data_dir``); on
    PostgreSQL the server runs as a replica (LISTEN/NOTIFY, the rollout lease)."""
    values = config_values(data_dir, drain_seconds=2, grpc_threads=4)
    if database is not None:
        values["database"] = {"url": database_url(database)}
    config = load_config(None, environ={}, overrides=values)
    with serving(config, grace=2) as running:
        yield Blocking(running.app, running.call)


def put_programs(app: Any, names: dict[str, int]) -> dict[str, str]:
    """Sign and store one small program per name (value = seed); name -> sha256."""
    return {
        name: app.registry.put(encode(small_program(seed, name)), name=name).sha256
        for name, seed in names.items()
    }
