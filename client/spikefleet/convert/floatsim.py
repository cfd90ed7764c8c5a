"""The float model, run in numpy: what SNNTorch computes, without torch.

Used for the fidelity report and for calibration. Frames (N, H, W, C) are one
time step each with a fresh membrane (how the reference network and Akida
run); sequences (N, T, H, W, C) carry each Leaky's membrane across the T steps
with SNNTorch's own update (beta decay, reset by subtraction or to zero), so
the report shows what converting a beta != 0 network as beta = 0 really costs.
Outputs of a sequence are summed over its steps (how N-DIGITS classifies a
sample from its frames). ``carry_membrane=False`` treats a sequence as
independent frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from spikefleet.convert.compat import Stage

F64 = npt.NDArray[np.float64]


@dataclass
class FloatRun:
    outputs: F64  # (N, classes): last layer potentials (or spike counts), summed over steps
    spike_counts: dict[str, npt.NDArray[np.int64]]  # per stage: spikes per sample
    stage_inputs: list[F64]  # rows each stage's neurons see (first step only), for calibration
    spikes: dict[str, npt.NDArray[np.bool_]] = field(
        default_factory=dict
    )  # (N, H, W, C), frames only


def patches(x: F64, kh: int, kw: int, stride: int, pad: tuple[int, int, int, int]) -> F64:
    """im2col of (N, C, H, W) -> (N, OH, OW, C*kh*kw) in torch's (c, i, j) weight order.

    ``pad`` is (top, bottom, left, right) zero padding.
    """
    if any(pad):
        x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    n, c, oh, ow = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, c * kh * kw)


def stage_potentials(stage: Stage, x: F64) -> tuple[F64, F64]:
    """(float potentials after pooling as (N, C, H, W), the input rows) for input x (N, C, H, W)."""
    n = x.shape[0]
    out = stage.weight.shape[0]
    if stage.kind == "dense":
        rows = x.reshape(n, -1)
        return (rows @ stage.weight.T + stage.bias).reshape(n, out, 1, 1), rows
    kh, kw = stage.weight.shape[2], stage.weight.shape[3]
    cols = patches(x, kh, kw, stage.stride, stage.float_pad)
    potential = (cols @ stage.weight.reshape(out, -1).T + stage.bias).transpose(0, 3, 1, 2)
    if stage.pool == "gap":
        # The pooled potential is the weights applied to the mean patch: those
        # rows give calibration the exact quantity the neuron thresholds.
        return potential.mean(axis=(2, 3), keepdims=True), cols.mean(axis=(1, 2))
    elif stage.pool == "max":
        k, s = stage.pool_size, stage.pool_stride
        windows = np.lib.stride_tricks.sliding_window_view(potential, (k, k), axis=(2, 3))
        potential = windows[:, :, ::s, ::s].max(axis=(4, 5))
    return potential, cols.reshape(-1, cols.shape[-1])


def run_float(
    stages: list[Stage], frames: np.ndarray, *, carry_membrane: bool = True, max_rows: int = 4096
) -> FloatRun:
    """Run frames (N, H, W, C) or sequences (N, T, H, W, C) through the float stages.

    ``carry_membrane=False`` starts every frame of a sequence from rest, as a
    stateless beta = 0 network (and Akida) does; outputs are still summed.
    """
    sequence = frames.ndim == 5
    steps = frames if sequence else frames[:, None]
    n, t = steps.shape[:2]
    counts = {stage.name: np.zeros(n, dtype=np.int64) for stage in stages}
    membranes: list[F64 | None] = [None] * len(stages)
    stage_inputs: list[F64] = []
    total: F64 | None = None
    spike_maps: dict[str, list[npt.NDArray[np.bool_]]] = {}
    rng = np.random.default_rng(0)
    for step in range(t):
        x = steps[:, step].astype(np.float64).transpose(0, 3, 1, 2)
        for index, stage in enumerate(stages):
            current, rows = stage_potentials(stage, x)
            if step == 0:
                if len(rows) > max_rows:
                    rows = rows[rng.choice(len(rows), max_rows, replace=False)]
                stage_inputs.append(rows)
            threshold = stage.threshold.reshape(1, -1, 1, 1) if stage.threshold.size else 0.0
            previous = membranes[index] if carry_membrane else None
            spike_model = stage.spike or stage.readout
            if previous is None or spike_model is None:
                mem = current
            else:
                beta = float(np.asarray(spike_model.beta).reshape(-1)[0])
                fired = (previous > threshold).astype(np.float64)
                if spike_model.reset_mechanism == "subtract":
                    mem = beta * previous + current - fired * threshold
                elif spike_model.reset_mechanism == "zero":
                    mem = beta * previous * (1 - fired) + current
                else:
                    mem = beta * previous + current
            membranes[index] = mem
            if stage.spike is None:
                x = mem
                break
            spikes = (mem > threshold).astype(np.float64)
            counts[stage.name] += spikes.reshape(n, -1).sum(axis=1).astype(np.int64)
            if not carry_membrane or not sequence:
                spike_maps.setdefault(stage.name, []).append(
                    spikes.transpose(0, 2, 3, 1).astype(bool)
                )
            x = spikes
            if index == len(stages) - 1 and stage.output_gain is not None:
                x = spikes * stage.output_gain.reshape(1, -1, 1, 1)
        flat = x.reshape(n, -1)
        total = flat if total is None else total + flat
    assert total is not None
    # Frame order of frames.reshape(-1, H, W, C): sample-major, then step.
    maps = {
        name: np.stack(per_step, axis=1).reshape(n * t, *per_step[0].shape[1:])
        for name, per_step in spike_maps.items()
    }
    return FloatRun(total, counts, stage_inputs, maps)
