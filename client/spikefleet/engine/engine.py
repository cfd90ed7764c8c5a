"""Run a Program on uint8 frames with akida 2.19.3's integer semantics (C kernels, numpy arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spikefleet.engine import _kernels
from spikefleet.engine.layers import CompiledLayer, ConvLayer, DenseLayer
from spikefleet.errors import FrameError
from spikefleet.program.model import Convolutional, FullyConnected, Program
from spikefleet.program.validate import validate

CHUNK = 256  # frames per pass: bounds the memory of intermediate maps in big batches


@dataclass
class EngineResult:
    """``outputs`` is exactly akida's ``Model.forward``: int32 potentials when the
    last layer has no activation, else uint8 levels. ``spike_counts`` maps each
    layer name to the number of non-zero outputs per sample."""

    outputs: np.ndarray
    spike_counts: dict[str, npt.NDArray[np.int64]] | None = None


class Engine:
    """A Program compiled for repeated runs; construction validates it.

    Runs release the GIL inside the kernels, so engines in several threads
    use several cores.
    """

    def __init__(self, program: Program, *, max_engine_bytes: int | None = None) -> None:
        shapes = validate(program, max_engine_bytes=max_engine_bytes)
        self.program = program
        self.input_shape = shapes[0]
        self.input_bits = program.input.bits
        self.layers: list[CompiledLayer] = []
        level_max = (1 << self.input_bits) - 1
        for layer, previous, shape in zip(program.layers[1:], shapes[:-1], shapes[1:], strict=True):
            compiled: CompiledLayer
            if isinstance(layer, Convolutional):
                compiled = ConvLayer(layer, previous, level_max, shape)
            else:
                assert isinstance(layer, FullyConnected)
                compiled = DenseLayer(layer, previous, level_max, shape)
            self.layers.append(compiled)
            level_max = (1 << layer.activation.bits) - 1 if layer.activation else 0
        self.output_shape = shapes[-1]

    def check_frames(self, frames: object) -> np.ndarray:
        """``frames`` as a batch (N, H, W, C) if they fit the program's input, else raise
        FrameError. One frame (H, W, C) is a batch of one, as ``AgentClient.infer`` takes it."""
        if not isinstance(frames, np.ndarray):
            raise FrameError(f"frames must be a numpy array, got {type(frames).__name__}")
        if frames.dtype != np.uint8:
            raise FrameError(
                f"frames must be uint8, got {frames.dtype}; convert with .astype(np.uint8) "
                "after checking the values fit the input bits"
            )
        expected = self.input_shape
        if frames.ndim == 3 and tuple(frames.shape) == expected:
            frames = frames[None]
        if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
            raise FrameError(
                f"frames have shape {frames.shape}, expected (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}) or one frame {expected}"
            )
        limit = 1 << self.input_bits
        frames = np.ascontiguousarray(frames)
        peak = _kernels.peak(frames)
        if peak >= limit:
            raise FrameError(
                f"frame value {peak} does not fit the program's "
                f"{self.input_bits}-bit input (values must be below {limit})"
            )
        return frames

    def run(self, frames: np.ndarray, *, spike_counts: bool = False) -> EngineResult:
        """Outputs of the last layer for every frame, and optionally per-layer counts."""
        frames = self.check_frames(frames)
        n = frames.shape[0]
        if 0 < n <= CHUNK:
            return self._run_chunk(frames, spike_counts)
        last = self.layers[-1]
        dtype = np.uint8 if last.has_activation else np.int32
        outputs = np.empty((n, *self.output_shape), dtype=dtype)
        counts = (
            {layer.name: np.zeros(n, dtype=np.int64) for layer in self.layers}
            if spike_counts
            else None
        )
        for start in range(0, n, CHUNK):
            x: np.ndarray = frames[start : start + CHUNK]
            for layer in self.layers:
                x = layer.forward(x)
                if counts is not None:
                    counts[layer.name][start : start + x.shape[0]] = np.count_nonzero(
                        x.reshape(x.shape[0], -1), axis=1
                    )
            outputs[start : start + x.shape[0]] = x
        return EngineResult(outputs=outputs, spike_counts=counts)

    def _run_chunk(self, frames: np.ndarray, spike_counts: bool) -> EngineResult:
        """One pass over a batch small enough to run at once (the common case)."""
        n = frames.shape[0]
        counts: dict[str, npt.NDArray[np.int64]] | None = {} if spike_counts else None
        x: np.ndarray = frames
        for layer in self.layers:
            x = layer.forward(x)
            if counts is not None:
                counts[layer.name] = np.count_nonzero(x.reshape(n, -1), axis=1).astype(np.int64)
        return EngineResult(outputs=x, spike_counts=counts)

    def predict(self, frames: np.ndarray) -> npt.NDArray[np.int64]:
        """Top-1 class per frame over the flattened outputs, dequantized by output_scales."""
        return np.argmax(self.class_scores(self.run(frames).outputs), axis=1).astype(np.int64)

    def class_scores(self, outputs: np.ndarray) -> npt.NDArray[np.float64]:
        """Per-frame class scores (N, classes) from ``run``'s outputs, dequantized by
        output_scales: comparable across frames, so a sample's frames can be summed."""
        flat = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
        scales = self.program.output_scales
        if scales is not None:
            flat = flat * np.tile(scales.astype(np.float64), flat.shape[1] // scales.size)
        return flat
