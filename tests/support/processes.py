"""spikefleet-server and spikefleet-agent as real child processes, their stderr collected.

:class:`Child` reads a child's log lines on a thread so a test can wait for one
(``wait_for``), see the latest (``recent``), and stop it (SIGTERM, or ``kill9``);
:class:`ServerProcess` is a ``spikefleet-server serve`` that reports its port.
"""

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

BIN = Path(sys.executable).parent
SERVER = str(BIN / "spikefleet-server")
AGENT = str(BIN / "spikefleet-agent")


def free_port() -> int:
    """A loopback port free right now (for a server that must come back on the same one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A child process whose stderr lines are collected for ``wait_for``."""

    def __init__(self, argv: list[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put("")  # the process closed stderr: it has exited

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """The first log line (from now on) matching ``pattern``."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"never logged {pattern!r}; log:\n{''.join(self.log[-40:])}"
                ) from None
            if not line:
                self.lines.put("")  # later waits see the exit too
                raise AssertionError(
                    f"exited before logging {pattern!r}; log:\n{''.join(self.log[-40:])}"
                )
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def recent(self, lines: int = 30) -> str:
        """The last lines it logged, including those no ``wait_for`` has read yet."""
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if not line:
                self.lines.put("")
                break
            self.log.append(line)
        return "".join(self.log[-lines:])

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    kill = kill9

    def terminate(self) -> int:
        """SIGTERM, and the exit code once it has drained."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill9()


class ServerProcess(Child):
    """``spikefleet-server serve`` (``argv``), once it logged the port it listens on."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.port = int(self.wait_for(r"listening on port (\d+)").group(1))

    def __enter__(self) -> ServerProcess:
        return self


def serve(config: Path, data_dir: Path) -> ServerProcess:
    """``spikefleet-server serve`` on a free loopback port, plaintext, with a data dir."""
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
