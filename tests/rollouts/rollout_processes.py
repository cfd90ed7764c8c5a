"""spikefleet-server and -agent as real child processes, for the tests that kill them with -9.

The process plumbing (stderr collection, ``wait_for``, ``stop``, ``kill9``) is
``support.processes``; this module only knows how the rollout tests configure them.
"""

from __future__ import annotations

from pathlib import Path

from rollout_helpers import config_toml
from support.processes import AGENT, SERVER, Child, ServerProcess, free_port

__all__ = ["AgentProcess", "ServerProcess", "free_port", "start_server"]


def start_server(root: Path, data_dir: Path, port: int) -> ServerProcess:
    """``spikefleet-server serve`` on a fixed loopback port."""
    config = root / "server.toml"
    config.write_text(config_toml(data_dir, f"127.0.0.1:{port}"))
    return ServerProcess([SERVER, "serve", "--config", str(config)])


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
        super().__init__([AGENT, "run", "--config", str(config)])
        port = self.wait_for(r'"inference_port": (\d+)').group(1)
        self.address = f"127.0.0.1:{port}"
