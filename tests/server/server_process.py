"""``spikefleet-server serve`` on a free loopback port, plaintext, with a data dir."""

from __future__ import annotations

from pathlib import Path

from support.processes import SERVER, ServerProcess

__all__ = ["SERVER", "ServerProcess", "serve"]


def serve(config: Path, data_dir: Path) -> ServerProcess:
    return ServerProcess(
        [
            SERVER,
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--insecure-loopback",
        ]
    )
