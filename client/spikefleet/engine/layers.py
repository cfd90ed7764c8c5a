"""Layers compiled once at Engine construction into matrices and index plans.

Every layer computes integer potentials with float matrix products: the sums
are exact as long as they stay below 2**24 in float32 (checked per layer from
the weight and input bounds; float64 is used otherwise). Akida conventions
(measured, see docs/akida-semantics.md):

- Convolutional is a true convolution (kernel flipped against a
  cross-correlation); Same padding puts floor(total/2) rows/columns before
  and the rest after, as TensorFlow does.
- Max pooling takes the maximum over the window positions inside the map
  (padding never wins); with Same padding it pads like the convolution.
- "Global average" pooling outputs the SUM of the potentials over the map,
  then fires: akida does not divide.
- FullyConnected reads its (H, W, C) input in Fortran order.
- Potentials saturate to 20-bit signed values [-2**19, 2**19 - 1] in
  FullyConnected layers and after max pooling (clip of the full sum), and
  global average pooling accumulates positions in row-major order with a
  saturating 20-bit accumulator. A Convolutional without pooling does not
  saturate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spikefleet.engine.activation import level_boundaries, quantize
from spikefleet.program.model import Convolutional, FullyConnected, Padding, Pooling
from spikefleet.program.shapes import Shape

EXACT_FLOAT32 = 2**24
POTENTIAL_MIN = -(2**19)
POTENTIAL_MAX = 2**19 - 1

FloatArray = npt.NDArray[np.floating]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) of akida's Same padding."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


@dataclass
class _Pool:
    size: int
    stride: int
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    out: tuple[int, int]


class CompiledLayer:
    """One layer: ``forward(x)`` maps (N, H, W, C) levels to outputs (N, h, w, c)."""

    name: str
    output_shape: Shape
    has_activation: bool
    dtype: type[np.floating]

    def forward(self, x: FloatArray) -> npt.NDArray[np.generic]:
        raise NotImplementedError


def _compute_dtype(bound: float, boundaries: FloatArray | None) -> type[np.floating]:
    big = bound >= EXACT_FLOAT32
    if boundaries is not None and boundaries.size:
        big = big or float(np.abs(boundaries).max()) >= EXACT_FLOAT32
    return np.float64 if big else np.float32


class ConvLayer(CompiledLayer):
    def __init__(self, layer: Convolutional, input_shape: Shape, input_max: int, output: Shape):
        self.name = layer.name
        self.output_shape = output
        height, width, channels = input_shape
        kh, kw = layer.kernel_size
        self.kernel = (kh, kw)
        self.stride = layer.stride
        if layer.padding is Padding.SAME:
            self.out_h, top, bottom = same_padding(height, kh, layer.stride)
            self.out_w, left, right = same_padding(width, kw, layer.stride)
        else:
            self.out_h = (height - kh) // layer.stride + 1
            self.out_w = (width - kw) // layer.stride + 1
            top = bottom = left = right = 0
        self.pad = (top, bottom, left, right)
        self.padded = (height + top + bottom, width + left + right, channels)
        self.has_activation = layer.activation is not None
        self.boundaries = (
            level_boundaries(layer.activation, layer.threshold, f"layer {layer.name!r}")
            if layer.activation is not None
            else None
        )
        weights = layer.weights.astype(np.int64)
        bound = float(np.abs(weights).sum(axis=(0, 1, 2)).max()) * input_max
        self.pooling = layer.pooling
        self.gap_saturates = False
        if layer.pooling is Pooling.GLOBAL_AVERAGE:
            bound *= self.out_h * self.out_w
            self.gap_saturates = bound > POTENTIAL_MAX
        self.dtype = _compute_dtype(bound, self.boundaries)
        flipped = weights[::-1, ::-1]
        self.matrix = np.ascontiguousarray(
            flipped.reshape(kh * kw * channels, layer.filters).astype(self.dtype)
        )
        if self.boundaries is not None:
            self.boundaries = self.boundaries.astype(self.dtype)
        self.pool: _Pool | None = None
        if layer.pooling is Pooling.MAX:
            self.pool = self._max_pool_plan(layer)

    def _max_pool_plan(self, layer: Convolutional) -> _Pool:
        size, stride = layer.pool_size, layer.pool_stride
        if layer.padding is Padding.SAME:
            out_h, top, bottom = same_padding(self.out_h, size, stride)
            out_w, left, right = same_padding(self.out_w, size, stride)
        else:
            out_h = (self.out_h - size) // stride + 1
            out_w = (self.out_w - size) // stride + 1
            top = bottom = left = right = 0
        return _Pool(size, stride, (top, bottom, left, right), (out_h, out_w))

    def potentials(self, x: FloatArray) -> FloatArray:
        n = x.shape[0]
        top, bottom, left, right = self.pad
        if top or bottom or left or right:
            padded = np.zeros((n, *self.padded), dtype=self.dtype)
            padded[:, top : top + x.shape[1], left : left + x.shape[2]] = x
        else:
            padded = x.astype(self.dtype, copy=False)
        kh, kw = self.kernel
        s = self.stride
        windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))
        windows = windows[:, : (self.out_h - 1) * s + 1 : s, : (self.out_w - 1) * s + 1 : s]
        # windows: (n, out_h, out_w, C, kh, kw) -> rows ordered (kh, kw, C) like the matrix
        cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * self.out_h * self.out_w, -1)
        return (cols @ self.matrix).reshape(n, self.out_h, self.out_w, -1)

    def forward(self, x: FloatArray) -> npt.NDArray[np.generic]:
        p = self.potentials(x)
        if self.gap_saturates:
            p = _saturating_sum(p)
        elif self.pooling is Pooling.GLOBAL_AVERAGE:
            p = p.sum(axis=(1, 2), keepdims=True, dtype=np.float64).astype(self.dtype)
        elif self.pool is not None:
            p = np.clip(_max_pool(p, self.pool), POTENTIAL_MIN, POTENTIAL_MAX)
        if self.boundaries is None:
            return p.astype(np.int32)
        return quantize(p, self.boundaries)


def _saturating_sum(p: FloatArray) -> FloatArray:
    """Akida's global pooling sum: row-major over positions, saturating at 20 bits."""
    acc = np.zeros((p.shape[0], 1, 1, p.shape[3]), dtype=np.float64)
    for row in range(p.shape[1]):
        for col in range(p.shape[2]):
            acc[:, 0, 0] += p[:, row, col]
            np.clip(acc, POTENTIAL_MIN, POTENTIAL_MAX, out=acc)
    return acc.astype(p.dtype)


def _max_pool(p: FloatArray, pool: _Pool) -> FloatArray:
    top, bottom, left, right = pool.pad
    if top or bottom or left or right:
        n, h, w, c = p.shape
        padded = np.full((n, h + top + bottom, w + left + right, c), -np.inf, dtype=p.dtype)
        padded[:, top : top + h, left : left + w] = p
        p = padded
    out_h, out_w = pool.out
    s = pool.stride
    result: FloatArray | None = None
    for i in range(pool.size):
        for j in range(pool.size):
            view = p[:, i : i + (out_h - 1) * s + 1 : s, j : j + (out_w - 1) * s + 1 : s]
            result = view.copy() if result is None else np.maximum(result, view, out=result)
    assert result is not None
    return result


class DenseLayer(CompiledLayer):
    def __init__(self, layer: FullyConnected, input_shape: Shape, input_max: int, output: Shape):
        self.name = layer.name
        self.output_shape = output
        height, width, channels = input_shape
        self.has_activation = layer.activation is not None
        self.boundaries = (
            level_boundaries(layer.activation, layer.threshold, f"layer {layer.name!r}")
            if layer.activation is not None
            else None
        )
        weights = layer.weights.astype(np.int64)
        bound = float(np.abs(weights).sum(axis=0).max()) * input_max
        self.dtype = _compute_dtype(bound, self.boundaries)
        # Akida row (c*W + w)*H + h holds input (h, w, c); reorder rows to C order.
        h, w, c = np.meshgrid(
            np.arange(height), np.arange(width), np.arange(channels), indexing="ij"
        )
        fortran_rows = ((c * width + w) * height + h).reshape(-1)
        self.matrix = np.ascontiguousarray(weights[fortran_rows].astype(self.dtype))
        if self.boundaries is not None:
            self.boundaries = self.boundaries.astype(self.dtype)

    def forward(self, x: FloatArray) -> npt.NDArray[np.generic]:
        n = x.shape[0]
        p = x.reshape(n, -1).astype(self.dtype, copy=False) @ self.matrix
        p = np.clip(p.reshape(n, 1, 1, -1), POTENTIAL_MIN, POTENTIAL_MAX)
        if self.boundaries is None:
            return p.astype(np.int32)
        return quantize(p, self.boundaries)
