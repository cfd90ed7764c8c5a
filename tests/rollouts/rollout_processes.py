"""spikefleet-server and -agent as real child processes, for the tests that kill them with -9.

The process plumbing (stderr collection, ``wait_for``, ``stop``, ``kill9``) is the
fleet tests' ``Child``; this module only knows how the rollout tests configure them.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fleet"))

from fleet_processes import Child
from rollout_helpers import config_toml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess(Child):
    """``spikefleet-server serve`` on a fixed loopback port."""

    def __init__(self, root: Path, data_dir: Path, port: int) -> None:
        config = root / "server.toml"
        config.write_text(config_toml(data_dir, f"127.0.0.1:{port}"))
        super().__init__([str(BIN / "spikefleet-server"), "serve", "--config", str(config)])
        self.wait_for(r"listening on port (\d+)")


class AgentProcess(Child):
    """``spikefleet-agent run`` (sim backend) dialing a server on loopback."""

    def __init__(self, root: Path, agent_id: str, server_port: int, keys: Path, token: str) -> None:
        (root / "agent.token").write_text(token)
        config = root / f"{agent_id}.toml"
        config.write_text(
            f'agent_id = "{agent_id}"\nstate_dir = "{root / agent_id}"\n'
            f'lock_dir = "{root / f"{agent_id}-locks"}"\ntrusted_keys = ["{keys}"]\n'
            f'[labels]\nsite = "lab"\n'
            f'[server]\naddress = "127.0.0.1:{server_port}"\n'
            f'token_file = "{root / "agent.token"}"\n'
            "heartbeat_interval_s = 0.3\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\n"
            '[inference]\naddress = "127.0.0.1:0"\n[telemetry]\ninterval_s = 0.3\n'
        )
        self.agent_id = agent_id
        super().__init__([str(BIN / "spikefleet-agent"), "run", "--config", str(config)])
        port = self.wait_for(r'"inference_port": (\d+)').group(1)
        self.address = f"127.0.0.1:{port}"
