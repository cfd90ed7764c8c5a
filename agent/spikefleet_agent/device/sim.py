"""The default backend: spikefleet's own bit-exact int4 engine."""

from __future__ import annotations

import numpy as np

from spikefleet.program.model import Program
from spikefleet_agent.device.base import PowerSample, RunResult, result_of


class SimRunner:
    def __init__(self, program: Program, max_engine_bytes: int | None = None) -> None:
        from spikefleet.engine import Engine

        self._program = program
        self._engine = Engine(program, max_engine_bytes=max_engine_bytes)

    def run(self, frames: np.ndarray, *, spike_counts: bool = False) -> RunResult:
        result = self._engine.run(frames, spike_counts=spike_counts)
        return result_of(self._program, result.outputs, result.spike_counts)

    def close(self) -> None:
        pass


class SimBackend:
    name = "sim"

    def __init__(self, max_engine_bytes: int | None = None) -> None:
        self._max_engine_bytes = max_engine_bytes

    def load(self, program: Program) -> SimRunner:
        return SimRunner(program, self._max_engine_bytes)

    def power_samples(self) -> list[PowerSample]:
        return []

    def close(self) -> None:
        pass
