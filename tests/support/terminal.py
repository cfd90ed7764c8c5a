"""Run a command with its stderr on a pseudo-terminal, as a person at a shell sees it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class TerminalProcess:
    """A child whose stderr is a pty (stdout is discarded); ``wait_for`` reads its lines,
    without colour codes."""

    def __init__(self, argv: Sequence[str], cwd: Path | None = None) -> None:
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd
        )
        os.close(slave)
        self._buffer = b""
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """The first line (from now on) containing ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = ANSI.sub("", raw.decode(errors="replace")).rstrip("\r")
                self.lines.append(line)
                if text in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {text!r}; output:\n" + "\n".join(self.lines))
            ready, _, _ = select.select([self._master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # the child closed the terminal: it has exited
                chunk = b""
            if not chunk:
                raise AssertionError(f"exited before {text!r}; output:\n" + "\n".join(self.lines))
            self._buffer += chunk

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        os.close(self._master)

    def __enter__(self) -> TerminalProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
