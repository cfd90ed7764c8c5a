"""The program being served, swapped atomically under running streams.

Every batch reads ``runtime.active`` once and runs to completion on that
program, so an install that swaps the reference never drops or mixes an
in-flight stream: the next batch simply runs on the new program.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from spikefleet.errors import EngineError
from spikefleet.program.model import Program
from spikefleet_agent.device.base import Backend, Runner, RunResult
from spikefleet_agent.telemetry.collector import Collector


@dataclass
class Loaded:
    sha256: str
    program: Program
    runner: Runner


class NoProgramError(EngineError):
    """No verified program is installed yet."""


class Runtime:
    def __init__(self, backend: Backend, collector: Collector, spike_every: int = 16) -> None:
        self.backend = backend
        self.collector = collector
        self.active: Loaded | None = None
        self.previous_sha256 = ""
        self.shadow: Loaded | None = None
        self._spike_every = max(1, spike_every)
        self._batches = 0
        self._swap_lock = threading.Lock()

    def load(self, sha256: str, program: Program) -> Loaded:
        return Loaded(sha256=sha256, program=program, runner=self.backend.load(program))

    def swap(self, loaded: Loaded) -> None:
        with self._swap_lock:
            old = self.active
            self.active = loaded
            if old is not None and old.sha256 != loaded.sha256:
                self.previous_sha256 = old.sha256
        if old is not None and old.runner is not loaded.runner:
            old.runner.close()

    def set_shadow(self, loaded: Loaded | None) -> None:
        old, self.shadow = self.shadow, loaded
        if old is not None and (loaded is None or old.runner is not loaded.runner):
            old.runner.close()

    def current(self) -> Loaded:
        active = self.active
        if active is None:
            raise NoProgramError(
                "no program installed yet: assign one from the server "
                "(spikefleet rollout) and wait for the agent to install it"
            )
        return active

    def infer(self, frames: np.ndarray, active: Loaded | None = None) -> RunResult:
        """Run one batch on the active program (and the shadow one, if any)."""
        active = active or self.current()
        self._batches += 1
        want_spikes = self._batches % self._spike_every == 0
        result = active.runner.run(frames, spike_counts=want_spikes)
        shadow = self.shadow
        if shadow is not None and shadow.program.input.shape == active.program.input.shape:
            try:
                shadow_classes = shadow.runner.run(frames).classes
            except EngineError:
                shadow_classes = None
            if shadow_classes is not None:
                agree = int(np.count_nonzero(shadow_classes == result.classes))
                self.collector.shadow(shadow.sha256, len(frames), agree)
        return result
