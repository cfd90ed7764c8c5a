"""``spikefleet-server serve`` as a real child process, with its log lines collected."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

SERVER = str(Path(sys.executable).parent / "spikefleet-server")


class ServerProcess:
    def __init__(self, config: Path, data_dir: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.process = subprocess.Popen(
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for(r"listening on port (\d+)").group(1))

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
                    f"server never logged {pattern!r}; log:\n{''.join(self.log)}"
                ) from None
            if not line:
                raise AssertionError(
                    f"server exited before logging {pattern!r}; log:\n{''.join(self.log)}"
                )
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()
