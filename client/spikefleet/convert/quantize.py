"""Quantize lowered float stages into Akida 1.0 layers with integer thresholds.

For output channel j with weights W_j, bias b_j and threshold T_j, the float
neuron fires when W_j.x + b_j > T_j. With a per-channel scale s_j > 0 and
integer weights q_j = round(W_j / s_j) the chip computes the integer potential
P = q_j.x and fires when P > t_j. Since P is an integer, P > (T_j - b_j)/s_j
holds exactly when P > floor((T_j - b_j)/s_j), so t_j = floor(...) keeps the
float decision for every quantized potential (rounding to nearest would flip
it for fractional parts above one half). With global average pooling Akida
compares the SUM of the H*W potentials with the threshold (measured with akida
2.19.3), so t_j = floor(H*W*(T_j - b_j)/s_j).

The output layer read as potentials keeps s_j as host-side ``output_scales``.
Weight range: 4 bits [-7, 7] (akida rejects -8), 2 bits [-1, 1], 1 bit {0, 1}
(akida's 1-bit weights are unsigned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from spikefleet.convert.compat import Stage
from spikefleet.convert.floatsim import row_count, stage_potentials, stage_rows
from spikefleet.errors import ConversionError
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Layer,
    Padding,
    Pooling,
)

F64 = npt.NDArray[np.float64]
ClipMethod = Literal["max", "mse"]

_INT32 = np.iinfo(np.int32)
_CLIP_GRID = np.linspace(0.5, 1.0, 26)


def weight_range(bits: int) -> tuple[int, int]:
    """The integer weight range akida accepts for ``bits``-bit weights."""
    if bits == 1:
        return 0, 1
    if bits in (2, 4):
        limit = 2 ** (bits - 1) - 1
        return -limit, limit
    raise ConversionError(f"weights of {bits} bits: choose 4, 2 or 1")


def _quantize_rows(rows: F64, scales: F64, low: int, high: int) -> F64:
    return np.clip(np.rint(rows / scales[:, None]), low, high)


def choose_scales(
    weight: F64,
    bits: int,
    method: ClipMethod = "mse",
    inputs: F64 | None = None,
    boundary: F64 | None = None,
    target: F64 | None = None,
) -> F64:
    """Per-output-channel scales for ``weight`` (out, fan_in).

    ``max`` maps each channel's largest |w| to the top integer; ``mse`` picks a
    clipping point per channel on a grid. With ``inputs`` (rows of real layer
    inputs, fan_in wide) it minimises the error of the potentials against
    ``target`` (the float model's potentials for those rows; default
    ``inputs @ weight.T``); with ``boundary`` too (neuron j fires when its
    potential exceeds boundary_j) it first minimises the number of spike
    decisions that flip, after the mean potential error is corrected in the
    threshold as :func:`quantize_stages` does. Without inputs it minimises the
    error of the weights themselves.
    """
    low, high = weight_range(bits)
    rows = weight.reshape(weight.shape[0], -1)
    peak = np.abs(rows).max(axis=1) if low < 0 else np.maximum(rows.max(axis=1), 0.0)
    peak = np.where(peak > 0, peak, 1.0)
    if method == "max":
        return peak / high
    best = np.full(rows.shape[0], np.inf)
    chosen = peak / high
    fractions = _CLIP_GRID if bits > 1 else np.linspace(0.2, 1.0, 41)
    if inputs is not None and target is None:
        target = inputs @ rows.T
    reference = target > boundary if target is not None and boundary is not None else None
    for fraction in fractions:
        scales = peak * fraction / high
        quantized = _quantize_rows(rows, scales, low, high) * scales[:, None]
        if inputs is None or target is None:
            cost = ((quantized - rows) ** 2).mean(axis=1)
        else:
            potential_error = inputs @ quantized.T - target
            cost = potential_error.var(axis=0) + potential_error.mean(axis=0) ** 2
            if reference is not None:
                shifted = potential_error - potential_error.mean(axis=0)
                flips = ((target + shifted > boundary) != reference).sum(axis=0)
                cost = flips + cost / (1.0 + cost)  # flips first, error breaks ties
        better = cost < best
        best = np.where(better, cost, best)
        chosen = np.where(better, scales, chosen)
    return chosen


def integer_threshold(value: F64) -> npt.NDArray[np.int32]:
    """floor() of the real threshold, robust to float noise just below an integer."""
    nearest = np.rint(value)
    snapped = np.where(
        np.abs(value - nearest) <= 1e-9 * np.maximum(1.0, np.abs(value)), nearest, value
    )
    return np.clip(np.floor(snapped), _INT32.min, _INT32.max).astype(np.int32)


def akida_conv_weights(weight: F64) -> F64:
    """torch (out, in, kh, kw) cross-correlation -> akida (kh, kw, in, out) convolution."""
    return weight[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)


def akida_dense_weights(weight: F64, in_shape: tuple[int, int, int]) -> F64:
    """torch (out, C*H*W) over a C-order flatten -> akida rows (c*W + w)*H + h."""
    c, h, w = in_shape
    out = weight.shape[0]
    return weight.reshape(out, c, h, w).transpose(0, 1, 3, 2).reshape(out, c * w * h).T


@dataclass
class Quantized:
    """Akida layers plus what the host and the fidelity report need to know.

    ``always_on`` counts, per layer, the outputs per frame that fire on every
    frame because they carry the next layer's bias (see :func:`quantize_stages`).
    """

    layers: list[Layer]
    output_scales: npt.NDArray[np.float32] | None
    scales: list[F64]
    always_on: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _bias_units(bias: F64, scales: F64, high: int, low: int) -> npt.NDArray[np.int64] | None:
    """The output layer's bias in weight units, split over always-on inputs (k, units).

    None when the bias cannot be carried (unsigned 1-bit weights, or more than
    eight always-on inputs would be needed).
    """
    total = np.rint(bias / scales).astype(np.int64)
    if not np.any(total):
        return np.zeros((0, len(bias)), np.int64)
    if low == 0 and np.any(total < 0):
        return None
    count = int(np.ceil(np.abs(total).max() / high))
    if count > 8:
        return None
    parts = np.zeros((count, len(bias)), np.int64)
    remaining = total.copy()
    for k in range(count):
        parts[k] = np.clip(remaining, -high, high)
        remaining -= parts[k]
    return parts


def quantize_stages(
    stages: list[Stage],
    *,
    bits: int = 4,
    input_bits: int = 4,
    clip: ClipMethod = "mse",
    calibration: np.ndarray | None = None,
    float_spikes: list[np.ndarray] | None = None,
    max_rows: int = 4096,
) -> Quantized:
    """Akida layers for ``stages``.

    ``calibration`` frames (N, H, W, C) run through the float stages and,
    layer by layer, through the quantized ones: each layer is calibrated on the
    spikes the quantized layers before it really produce, against the float
    model's potentials. ``clip="mse"`` chooses scales that flip the fewest
    spike decisions, and the mean potential error left is corrected in the
    integer threshold (in the bias of an output layer). ``float_spikes[k]``,
    when given, are the float model's spikes out of stage k for those frames
    (already computed for the fidelity report), so only the quantized side runs.

    Akida has no bias on a layer without activation, so the bias of an output
    layer read as potentials rides on always-on inputs: the previous layer gets
    zero-weight neurons with threshold -1 (0 > -1 fires on every frame), and
    the output layer weights them with round(bias/scale), split into [-7, 7].
    """
    c, h, w = stages[0].in_shape
    low, high = weight_range(bits)
    weights: list[F64] = []
    thresholds: list[npt.NDArray[np.int32]] = []
    all_scales: list[F64] = []
    rng = np.random.default_rng(0)
    x_float = x_quant = None
    if calibration is not None and len(calibration):
        x_float = x_quant = calibration.astype(np.float32)
    biases: list[F64] = []
    for index, stage in enumerate(stages):
        rows = stage.weight.reshape(stage.weight.shape[0], -1)
        inputs = target = None
        if x_float is not None and x_quant is not None:
            count = row_count(stage, len(x_float))
            pick = rng.choice(count, max_rows, replace=False) if count > max_rows else None
            inputs = stage_rows(stage, x_quant, pick)
            target = stage_rows(stage, x_float, pick) @ rows.T
        boundary = stage.threshold - stage.bias if stage.spike is not None else None
        scales = choose_scales(rows, bits, clip, inputs, boundary, target)
        q = _quantize_rows(rows, scales, low, high)
        correction = np.zeros(len(scales))
        if inputs is not None and target is not None and len(inputs):
            correction = (inputs @ (q * scales[:, None]).T - target).mean(axis=0)
        area = 1
        if stage.pool == "gap":
            _, pre_h, pre_w = pre_pool_shape(stage)
            area = pre_h * pre_w
        if stage.spike is not None:
            real = area * (stage.threshold - stage.bias + correction) / scales
            thresholds.append(integer_threshold(real))
        else:
            thresholds.append(np.zeros(len(scales), np.int32))
        biases.append(stage.bias - correction)
        weights.append(q.reshape(stage.weight.shape))
        all_scales.append(scales)
        if x_float is not None and x_quant is not None and stage.spike is not None:
            if float_spikes is not None:
                x_float = float_spikes[index].astype(np.float32)
            else:
                fires = stage_potentials(stage, x_float) > stage.threshold.reshape(1, 1, 1, -1)
                x_float = fires.astype(np.float32)
            integer = Stage(**{**vars(stage), "weight": weights[-1], "bias": np.zeros(len(q))})
            potential = np.rint(stage_potentials(integer, x_quant) * area)
            x_quant = (potential > thresholds[-1].reshape(1, 1, 1, -1)).astype(np.float32)
        else:
            x_float = x_quant = None

    result = Quantized([InputData("input", (h, w, c), input_bits)], None, all_scales)
    last = stages[-1]
    in_shapes = [stage.in_shape for stage in stages]
    if last.spike is None:
        result.output_scales = all_scales[-1].astype(np.float32)
        if np.any(biases[-1] != 0):
            parts = _bias_units(biases[-1], all_scales[-1], high, low)
            if len(stages) < 2 or last.kind != "dense" or parts is None:
                result.notes.append(
                    f"{last.name}: Akida has no bias on a layer without activation and it "
                    "could not ride on always-on inputs; the bias is dropped (see the fidelity)"
                )
            elif len(parts):
                _add_always_on(stages, weights, thresholds, in_shapes, parts, result)
    elif last.output_gain is not None:
        result.output_scales = last.output_gain.astype(np.float32)

    for index, stage in enumerate(stages):
        q, threshold = weights[index], thresholds[index]
        activation = (
            Activation(bits=1, step=np.ones(q.shape[0], np.float32))
            if stage.spike is not None
            else None
        )
        if stage.kind == "conv":
            result.layers.append(
                Convolutional(
                    name=stage.name,
                    weights=np.ascontiguousarray(akida_conv_weights(q)).astype(np.int8),
                    threshold=threshold,
                    weights_bits=bits,
                    stride=stage.stride,
                    padding=Padding.SAME if stage.padding == "same" else Padding.VALID,
                    pooling={
                        "none": Pooling.NONE,
                        "max": Pooling.MAX,
                        "gap": Pooling.GLOBAL_AVERAGE,
                    }[stage.pool],
                    pool_size=stage.pool_size,
                    pool_stride=stage.pool_stride,
                    activation=activation,
                )
            )
        else:
            dense = akida_dense_weights(q, in_shapes[index])
            result.layers.append(
                FullyConnected(
                    name=stage.name,
                    weights=np.ascontiguousarray(dense).astype(np.int8),
                    threshold=threshold,
                    weights_bits=bits,
                    activation=activation,
                )
            )
    return result


def _add_always_on(
    stages: list[Stage],
    weights: list[F64],
    thresholds: list[npt.NDArray[np.int32]],
    in_shapes: list[tuple[int, int, int]],
    parts: npt.NDArray[np.int64],
    result: Quantized,
) -> None:
    """Give the previous layer ``len(parts)`` always-firing outputs carrying the bias."""
    count = len(parts)
    previous, last = stages[-2], stages[-1]
    q_prev = weights[-2]
    zeros = np.zeros((count, *q_prev.shape[1:]))
    weights[-2] = np.concatenate([q_prev, zeros])
    thresholds[-2] = np.concatenate([thresholds[-2], np.full(count, -1, np.int32)])
    channels, height, width = in_shapes[-1]
    q_last = weights[-1].reshape(len(last.bias), channels, height, width)
    extra = np.zeros((len(last.bias), count, height, width))
    extra[:, :, 0, 0] = parts.T  # one position per always-on channel carries the bias
    weights[-1] = np.concatenate([q_last, extra], axis=1).reshape(len(last.bias), -1)
    in_shapes[-1] = (channels + count, height, width)
    result.always_on[previous.name] = count * height * width
    result.notes.append(
        f"{last.name}: its bias rides on {count} always-on output(s) added to {previous.name} "
        "(Akida has no bias on a layer without activation)"
    )


def pre_pool_shape(stage: Stage) -> tuple[int, int, int]:
    """The convolution's output shape before pooling."""
    _, h, w = stage.in_shape
    kh, kw = stage.weight.shape[2], stage.weight.shape[3]
    top, bottom, left, right = stage.float_pad
    return (
        stage.weight.shape[0],
        (h + top + bottom - kh) // stage.stride + 1,
        (w + left + right - kw) // stage.stride + 1,
    )
