"""spikefleet-server as a real child process, for the tests that kill it with -9."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from rollout_helpers import config_toml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``spikefleet-server serve`` on a fixed loopback port; stderr kept for diagnosis."""

    def __init__(self, root: Path, data_dir: Path, port: int) -> None:
        config = root / "server.toml"
        config.write_text(config_toml(data_dir, f"127.0.0.1:{port}"))
        self.log: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [str(BIN / "spikefleet-server"), "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(r"listening on port (\d+)")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"server never logged {pattern!r}; log:\n{''.join(self.log[-40:])}"
                ) from None
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


class AgentProcess:
    """``spikefleet-agent run`` (sim backend) dialing a server on loopback."""

    def __init__(self, root: Path, agent_id: str, server_port: int, keys: Path, token: str) -> None:
        (root / "agent.token").write_text(token)
        config = root / f"{agent_id}.toml"
        config.write_text(
            f'agent_id = "{agent_id}"\nstate_dir = "{root / agent_id}"\n'
            f'lock_dir = "{root / "locks"}"\ntrusted_keys = ["{keys}"]\n'
            f'[labels]\nsite = "lab"\n'
            f'[server]\naddress = "127.0.0.1:{server_port}"\n'
            f'token_file = "{root / "agent.token"}"\n'
            "heartbeat_interval_s = 0.3\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\n"
            '[inference]\naddress = "127.0.0.1:0"\n[telemetry]\ninterval_s = 0.3\n'
        )
        self.agent_id = agent_id
        self.log: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [str(BIN / "spikefleet-agent"), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        port = self.wait_for(r'"inference_port": (\d+)').group(1)
        self.address = f"127.0.0.1:{port}"

    _read = ServerProcess._read
    wait_for = ServerProcess.wait_for
    stop = ServerProcess.stop
    kill9 = ServerProcess.kill9
