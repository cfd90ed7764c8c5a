"""A real spikefleet-server on loopback, tokens for every role, and model files."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from support.aio import Blocking
from support.server import serving

from spikefleet.client import Client
from spikefleet_server import logs
from spikefleet_server.config import hash_token, load_config

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
