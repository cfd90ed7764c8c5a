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
from spikefleet.convert.graph import Leaky

F64 = npt.NDArray[np.float64]


@dataclass
class FloatRun:
    outputs: F64  # (N, classes): last layer potentials (or spike counts), summed over steps
    spike_counts: dict[str, npt.NDArray[np.int64]]  # per stage: spikes per sample
    # Spike maps (N*T, H, W, C) per stage, when frames are independent (stateless).
    spikes: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    # With trace=True: per stage and step, (membrane, output) as (N, H, W, C).
    trace: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


def _padded(stage: Stage, x: np.ndarray) -> np.ndarray:
    top, bottom, left, right = stage.float_pad
    if top or bottom or left or right:
        return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    return x


def _windows(stage: Stage, xp: np.ndarray, i: int, j: int) -> np.ndarray:
    """The input pixels kernel tap (i, j) meets at every output position: (N, OH, OW, C)."""
    _, oh, ow = _conv_shape(stage)
    s = stage.stride
    return xp[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s, :]


def _conv_shape(stage: Stage) -> tuple[int, int, int]:
    _, h, w = stage.in_shape
    kh, kw = stage.weight.shape[2], stage.weight.shape[3]
    top, bottom, left, right = stage.float_pad
    return (
        stage.weight.shape[0],
        (h + top + bottom - kh) // stage.stride + 1,
        (w + left + right - kw) // stage.stride + 1,
    )


def stage_potentials(stage: Stage, x: np.ndarray, *, pooled: bool = True) -> np.ndarray:
    """Potentials after pooling, (N, H, W, C), for input x (N, H, W, C).

    im2col and one matrix product, in float32 like torch (exact for the
    integer sums of a quantized layer, which stay below 2**24).
    """
    n = x.shape[0]
    weight = stage.weight.astype(np.float32)
    if stage.kind == "dense":
        rows = x.transpose(0, 3, 1, 2).reshape(n, -1).astype(np.float32)
        return (rows @ weight.T + stage.bias).reshape(n, 1, 1, -1)
    kh, kw = weight.shape[2], weight.shape[3]
    xp = _padded(stage, x.astype(np.float32))
    s = stage.stride
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::s, ::s]
    _, oh, ow = _conv_shape(stage)
    cols = windows[:, :oh, :ow].reshape(n, oh, ow, -1)  # (c, i, j) order, like torch weights
    potential = cols @ weight.reshape(weight.shape[0], -1).T
    potential = potential + stage.bias.astype(np.float32)
    if stage.pool == "gap":
        return potential.mean(axis=(1, 2), keepdims=True)
    if stage.pool == "max" and pooled:
        return _max_pool(stage, potential)
    return potential


def stage_rows(stage: Stage, x: np.ndarray, pick: np.ndarray | None = None) -> F64:
    """The input rows a stage's neurons weigh, in torch's weight order (fan_in wide).

    Dense: one row per sample. Global average pooling: the mean patch per
    sample (the pooled potential is the weights applied to it). Otherwise one
    row per output position. ``pick`` keeps only those rows (flat positions, or
    samples where a sample is one row).
    """
    n = x.shape[0]
    if stage.kind == "dense":
        x = x if pick is None else x[pick]  # one row per sample: pick samples
        return x.transpose(0, 3, 1, 2).reshape(len(x), -1).astype(np.float64)
    c = x.shape[3]
    kh, kw = stage.weight.shape[2], stage.weight.shape[3]
    if stage.pool == "gap":
        x = x if pick is None else x[pick]
        n = len(x)
        xp = _padded(stage, x)
        means = np.empty((n, c, kh, kw))
        for i in range(kh):
            for j in range(kw):
                means[:, :, i, j] = _windows(stage, xp, i, j).mean(axis=(1, 2))
        return means.reshape(n, -1)
    xp = _padded(stage, x)
    _, oh, ow = _conv_shape(stage)
    flat = np.arange(n * oh * ow) if pick is None else pick
    sample, rest = np.divmod(flat, oh * ow)
    row, col = np.divmod(rest, ow)
    s = stage.stride
    taps_i = np.arange(kh)[None, :, None]
    taps_j = np.arange(kw)[None, None, :]
    gathered = xp[
        sample[:, None, None],
        row[:, None, None] * s + taps_i,
        col[:, None, None] * s + taps_j,
    ]  # (K, kh, kw, C)
    return gathered.transpose(0, 3, 1, 2).reshape(len(flat), -1).astype(np.float64)


def row_count(stage: Stage, n: int) -> int:
    if stage.kind == "dense" or stage.pool == "gap":
        return n
    _, oh, ow = _conv_shape(stage)
    return n * oh * ow


def _max_pool(stage: Stage, x: np.ndarray) -> np.ndarray:
    k, s = stage.pool_size, stage.pool_stride
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return windows[:, ::s, ::s].max(axis=(-2, -1))


def neuron_step(
    neuron: Leaky, previous: np.ndarray | None, current: np.ndarray, threshold: np.ndarray | float
) -> np.ndarray:
    """SNNTorch's ``Leaky.forward`` for one step: the new membrane (before any delayed reset).

    The reset is decided from the previous step's membrane (``reset_delay=True``,
    snntorch's default): at beta=0 with reset "subtract" a neuron that fired at
    t-1 starts step t at ``current - threshold``.
    """
    if previous is None:
        return current
    values = np.clip(np.asarray(neuron.beta, dtype=np.float64), 0.0, 1.0)
    beta: np.ndarray | float = values.reshape(-1) if values.size > 1 else float(values.flat[0])
    fired = (previous > threshold).astype(np.float64)
    if neuron.reset_mechanism == "subtract":
        return beta * previous + current - fired * threshold
    if neuron.reset_mechanism == "zero":
        return beta * previous * (1 - fired) + current
    return beta * previous + current


def run_float(
    stages: list[Stage], frames: np.ndarray, *, carry_membrane: bool = True, trace: bool = False
) -> FloatRun:
    """Run frames (N, H, W, C) or sequences (N, T, H, W, C) through the float stages.

    ``carry_membrane=False`` starts every frame of a sequence from rest, as a
    stateless beta = 0 network (and Akida) does; outputs are still summed.
    ``trace`` keeps every stage's membrane and output per step (``FloatRun.trace``).
    """
    sequence = frames.ndim == 5
    steps = frames if sequence else frames[:, None]
    n, t = steps.shape[:2]
    counts = {stage.name: np.zeros(n, dtype=np.int64) for stage in stages}
    membranes: list[np.ndarray | None] = [None] * len(stages)
    total: F64 | None = None
    spike_maps: dict[str, list[npt.NDArray[np.bool_]]] = {}
    traced: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for step in range(t):
        x: np.ndarray = steps[:, step].astype(np.float32)
        for index, stage in enumerate(stages):
            neuron = stage.spike or stage.readout
            unpooled = stage.pool_after and carry_membrane and sequence
            current = stage_potentials(stage, x, pooled=not unpooled)
            threshold = stage.threshold.reshape(1, 1, 1, -1) if stage.threshold.size else 0.0
            previous = membranes[index] if carry_membrane else None
            mem = current if neuron is None else neuron_step(neuron, previous, current, threshold)
            membranes[index] = mem
            if stage.spike is None:
                x = mem
                if trace:
                    traced.setdefault(stage.name, []).append((mem, mem))
                break
            spikes = (mem > threshold).astype(np.float32)
            if unpooled:
                spikes = _max_pool(stage, spikes)
            if trace:
                traced.setdefault(stage.name, []).append((mem, spikes))
            counts[stage.name] += spikes.reshape(n, -1).sum(axis=1).astype(np.int64)
            if not carry_membrane or not sequence:
                spike_maps.setdefault(stage.name, []).append(spikes.astype(bool))
            x = spikes
            if index == len(stages) - 1 and stage.output_gain is not None:
                x = spikes * stage.output_gain.reshape(1, 1, 1, -1)
        flat = x.reshape(n, -1)
        total = flat if total is None else total + flat
    assert total is not None
    # Frame order of frames.reshape(-1, H, W, C): sample-major, then step.
    maps = {
        name: np.stack(per_step, axis=1).reshape(n * t, *per_step[0].shape[1:])
        for name, per_step in spike_maps.items()
    }
    return FloatRun(total.astype(np.float64), counts, maps, traced)
