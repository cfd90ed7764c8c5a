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

from typing import Literal

import numpy as np
import numpy.typing as npt

from spikefleet.convert.compat import Stage
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
    weight: F64, bits: int, method: ClipMethod = "mse", inputs: F64 | None = None
) -> F64:
    """Per-output-channel scales for ``weight`` (out, fan_in).

    ``max`` maps each channel's largest |w| to the top integer; ``mse`` picks a
    clipping point per channel on a grid that minimises the error of the
    potentials over ``inputs`` (rows of layer inputs, fan_in wide) when given,
    else the error of the weights themselves.
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
    for fraction in fractions:
        scales = peak * fraction / high
        error = _quantize_rows(rows, scales, low, high) * scales[:, None] - rows
        cost = (
            ((inputs @ error.T) ** 2).mean(axis=0)
            if inputs is not None
            else (error**2).mean(axis=1)
        )
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


def quantize_stages(
    stages: list[Stage],
    *,
    bits: int = 4,
    input_bits: int = 4,
    clip: ClipMethod = "mse",
    layer_inputs: list[F64 | None] | None = None,
) -> tuple[list[Layer], npt.NDArray[np.float32] | None, list[F64]]:
    """Akida layers for ``stages``, the output scales, and each stage's scales.

    ``layer_inputs[i]`` are calibration rows entering stage i (im2col patches
    for convolutions), used by ``clip="mse"`` to weigh the error by real inputs.
    """
    c, h, w = stages[0].in_shape
    layers: list[Layer] = [InputData("input", (h, w, c), input_bits)]
    all_scales: list[F64] = []
    output_scales: npt.NDArray[np.float32] | None = None
    low, high = weight_range(bits)
    for index, stage in enumerate(stages):
        rows = stage.weight.reshape(stage.weight.shape[0], -1)
        inputs = layer_inputs[index] if layer_inputs else None
        scales = choose_scales(rows, bits, clip, inputs)
        q = _quantize_rows(rows, scales, low, high).reshape(stage.weight.shape)
        all_scales.append(scales)
        activation = None
        if stage.spike is not None:
            area = 1
            if stage.pool == "gap":
                _, pre_h, pre_w = pre_pool_shape(stage)
                area = pre_h * pre_w
            threshold = integer_threshold(area * (stage.threshold - stage.bias) / scales)
            activation = Activation(bits=1, step=np.ones(stage.weight.shape[0], np.float32))
        else:
            threshold = np.zeros(stage.weight.shape[0], np.int32)
            output_scales = scales.astype(np.float32)
        if stage.spike is not None and stage.output_gain is not None and index == len(stages) - 1:
            output_scales = stage.output_gain.astype(np.float32)
        if stage.kind == "conv":
            layers.append(
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
            layers.append(
                FullyConnected(
                    name=stage.name,
                    weights=np.ascontiguousarray(akida_dense_weights(q, stage.in_shape)).astype(
                        np.int8
                    ),
                    threshold=threshold,
                    weights_bits=bits,
                    activation=activation,
                )
            )
    return layers, output_scales, all_scales


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
