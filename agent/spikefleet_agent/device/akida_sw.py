"""BrainChip's own software backend of the Akida NP (the ``akida`` package)."""

from __future__ import annotations

import numpy as np

from spikefleet.program.model import Program
from spikefleet_agent.device.base import PowerSample, RunResult, check_frames, result_of


class AkidaSoftwareRunner:
    def __init__(self, program: Program) -> None:
        from spikefleet.brainchip import to_akida

        self._program = program
        self._model = to_akida(program)

    def run(self, frames: np.ndarray, *, spike_counts: bool = False) -> RunResult:
        check_frames(self._program, frames)
        outputs = np.asarray(self._model.forward(frames))
        return result_of(self._program, outputs)

    def close(self) -> None:
        pass


class AkidaSoftwareBackend:
    name = "akida-sw"

    def load(self, program: Program) -> AkidaSoftwareRunner:
        return AkidaSoftwareRunner(program)

    def power_samples(self) -> list[PowerSample]:
        return []

    def close(self) -> None:
        pass
