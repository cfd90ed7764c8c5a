"""What every backend provides: load a Program, run uint8 frames, report power."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from spikefleet.errors import FrameError
from spikefleet.program.model import Program


@dataclass
class RunResult:
    """Outputs of one batch: the raw last-layer outputs as akida returns them,
    the dequantized per-class scores and the top-1 class per frame."""

    outputs: np.ndarray
    scores: np.ndarray  # float32 (N, classes)
    classes: np.ndarray  # int64 (N,)
    spike_counts: dict[str, np.ndarray] | None = None


@dataclass
class PowerSample:
    unix_ms: int
    voltage_mv: float
    current_ma: float
    power_mw: float


class Runner(Protocol):
    """One program loaded on one backend."""

    def run(self, frames: np.ndarray, *, spike_counts: bool = False) -> RunResult: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def load(self, program: Program) -> Runner: ...

    def power_samples(self) -> list[PowerSample]: ...

    def close(self) -> None: ...


def check_frames(program: Program, frames: np.ndarray) -> None:
    """Raise FrameError unless ``frames`` is uint8 (N, H, W, C) within the input bit range."""
    expected = tuple(program.input.shape)
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise FrameError(f"frames must be a uint8 array, got {dtype}: cast with .astype(np.uint8)")
    if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
        raise FrameError(
            f"frames must have shape (N, {', '.join(map(str, expected))}), got {frames.shape}"
        )
    limit = 1 << program.input.bits
    if frames.size and int(frames.max()) >= limit:
        raise FrameError(
            f"frame values must lie in 0..{limit - 1} ({program.input.bits}-bit input), "
            f"got {int(frames.max())}: rescale or clip the frames"
        )


def scores_of(program: Program, outputs: np.ndarray) -> np.ndarray:
    """Flattened last-layer outputs, dequantized by ``program.output_scales``."""
    scores = outputs.reshape(outputs.shape[0], -1).astype(np.float32)
    if program.output_scales is not None:
        scores = scores * np.asarray(program.output_scales, dtype=np.float32).reshape(1, -1)
    return scores


def result_of(
    program: Program, outputs: np.ndarray, spike_counts: dict[str, np.ndarray] | None = None
) -> RunResult:
    scores = scores_of(program, outputs)
    classes = scores.argmax(axis=1).astype(np.int64)
    return RunResult(outputs=outputs, scores=scores, classes=classes, spike_counts=spike_counts)
