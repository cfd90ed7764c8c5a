"""A standalone ``spikefleet-agent run`` process serving one program, for tests and benchmarks.

The program is signed and put in the agent's active slot before it starts, as
a finished install leaves it, so no server is needed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from spikefleet.program.codec import encode
from spikefleet.program.model import Program
from spikefleet.program.signing import SigningKey, TrustedKeys, sign

AGENT = str(Path(sys.executable).parent / "spikefleet-agent")


class AgentProcess:
    """``with AgentProcess(program, root) as agent:`` serves on ``agent.address``.

    ``inference`` adds ``[inference]`` keys to the config (e.g. max_stream_bytes)."""

    def __init__(self, program: Program, root: Path, **inference: int) -> None:
        from spikefleet_agent.programs.slots import SlotStore

        root.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        (root / "keys").mkdir(exist_ok=True)
        key.public_key.save(root / "keys" / "server.pub")
        signed = sign(encode(program), key)
        store = SlotStore(root / "state" / "programs", TrustedKeys.load(root / "keys"))
        slot = store.inactive_slot()
        store.write(slot, signed.to_bytes())
        store.activate(slot, signed.sha256)
        extra = "".join(f"{name} = {value}\n" for name, value in inference.items())
        self.config = root / "agent.toml"
        self.config.write_text(
            'agent_id = "test-agent"\nstate_dir = "state"\nlock_dir = "lock"\n'
            'trusted_keys = ["keys"]\n[inference]\naddress = "127.0.0.1:0"\n'
            f"{extra}[telemetry]\ninterval_s = 3600\n"
        )
        self.sha256 = signed.sha256
        self.address = ""
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []

    def __enter__(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            [AGENT, "run", "--config", str(self.config), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not self.address:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"spikefleet-agent did not start: {self.log()}")
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self._seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "agent.listening":
                self.address = f"127.0.0.1:{record['inference_port']}"
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)

    def log(self) -> str:
        while not self._lines.empty():
            self._seen.append(self._lines.get())
        return "".join(self._seen[-40:])

    def peak_rss_bytes(self) -> int:
        """The process's peak resident memory (VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
