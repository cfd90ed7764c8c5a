"""Layers compiled once at Engine construction into matrices and gather tables.

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

Speed: a convolution gathers its im2col rows with one precomputed index table
(out-of-map taps read an appended zero), then runs one matrix product. A
convolution with global pooling that cannot saturate is folded into a single
(H*W*C, filters) matrix over its input map, because the sum over output
positions of a convolution is linear in the input; that layer and
FullyConnected then skip zeros (gathering the matrix rows of non-zero inputs)
when the input is sparse enough to pay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spikefleet.engine.activation import level_boundaries, quantize
from spikefleet.program.model import Activation, Convolutional, FullyConnected, Padding, Pooling
from spikefleet.program.shapes import Shape

EXACT_FLOAT32 = 2**24
POTENTIAL_MIN = -(2**19)
POTENTIAL_MAX = 2**19 - 1
# Below these shares of non-zero inputs, summing matrix rows beats BLAS (measured
# on a 9248x64 product: break-even near 8% for one frame, under 1% for 64).
SPARSE_DENSITY_SINGLE = 0.06
SPARSE_DENSITY_BATCH = 0.008
SPARSE_MIN_SIZE = 65536  # smaller matrices are cheaper to multiply than to inspect

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]


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


def _compute_dtype(bound: float, boundaries: FloatArray | None) -> type[np.floating]:
    big = bound >= EXACT_FLOAT32
    if boundaries is not None and boundaries.size:
        big = big or float(np.abs(boundaries).max()) >= EXACT_FLOAT32
    return np.float64 if big else np.float32


def _boundaries(
    activation: Activation | None, threshold: np.ndarray, name: str
) -> FloatArray | None:
    if activation is None:
        return None
    return level_boundaries(activation, threshold, f"layer {name!r}")


class CompiledLayer:
    """One layer: ``forward(x)`` maps (N, H, W, C) levels to outputs (N, h, w, c):
    uint8 levels when the layer has an activation, int32 potentials otherwise."""

    name: str
    output_shape: Shape
    has_activation: bool
    dtype: type[np.floating]
    boundaries: FloatArray | None

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _finish(self, p: FloatArray) -> np.ndarray:
        if self.boundaries is None:
            return p.astype(np.int32)
        return quantize(p, self.boundaries)


class FlatProduct:
    """x (N, K) @ matrix (K, F), dense through BLAS or by summing the rows of
    the non-zero inputs when few are non-zero."""

    def __init__(self, matrix: FloatArray) -> None:
        self.matrix = np.ascontiguousarray(matrix)
        self.dtype = matrix.dtype
        self.may_skip = matrix.size >= SPARSE_MIN_SIZE

    def __call__(self, x: np.ndarray) -> FloatArray:
        n, k = x.shape
        if not self.may_skip:
            return x.astype(self.dtype, copy=False) @ self.matrix
        nonzero = np.flatnonzero(x)
        if nonzero.size >= (SPARSE_DENSITY_SINGLE if n == 1 else SPARSE_DENSITY_BATCH) * n * k:
            return x.astype(self.dtype, copy=False) @ self.matrix
        rows = self.matrix[nonzero % k]
        values = x.reshape(-1)[nonzero]
        if values.size and values.max() > 1:
            rows *= values[:, None]
        out = np.zeros((n, self.matrix.shape[1]), dtype=self.dtype)
        if n == 1:
            if rows.shape[0]:
                out[0] = rows.sum(axis=0)
            return out
        frames = nonzero // k
        starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]) if frames.size else frames
        if starts.size:
            out[frames[starts]] = np.add.reduceat(rows, starts, axis=0)
        return out


class ConvLayer(CompiledLayer):
    def __init__(self, layer: Convolutional, input_shape: Shape, input_max: int, output: Shape):
        self.name = layer.name
        self.output_shape = output
        height, width, channels = input_shape
        kh, kw = layer.kernel_size
        stride = layer.stride
        if layer.padding is Padding.SAME:
            self.out_h, top, _ = same_padding(height, kh, stride)
            self.out_w, left, _ = same_padding(width, kw, stride)
        else:
            self.out_h = (height - kh) // stride + 1
            self.out_w = (width - kw) // stride + 1
            top = left = 0
        self.has_activation = layer.activation is not None
        boundaries = _boundaries(layer.activation, layer.threshold, layer.name)
        weights = layer.weights.astype(np.int64)
        bound = float(np.abs(weights).sum(axis=(0, 1, 2)).max()) * input_max
        self.pooling = layer.pooling
        positions = self.out_h * self.out_w
        self.gap_saturates = False
        if layer.pooling is Pooling.GLOBAL_AVERAGE:
            bound *= positions
            self.gap_saturates = bound > POTENTIAL_MAX
        self.may_saturate = bound > POTENTIAL_MAX
        self.dtype = _compute_dtype(bound, boundaries)
        self.boundaries = None if boundaries is None else boundaries.astype(self.dtype)

        # gather[p, (i*kw + j)*C + c]: flat input index under tap (i, j) of output p
        oy, ox = np.divmod(np.arange(positions), self.out_w)
        ti, tj = np.divmod(np.arange(kh * kw), kw)
        rows = oy[:, None] * stride + ti[None, :] - top
        cols = ox[:, None] * stride + tj[None, :] - left
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        base = np.where(inside, (rows * width + cols) * channels, -1)
        c = np.arange(channels)
        gather = np.where(base[..., None] >= 0, base[..., None] + c, height * width * channels)
        self.gather = gather.reshape(positions, kh * kw * channels).astype(np.intp)
        self.input_size = height * width * channels
        matrix = weights[::-1, ::-1].reshape(kh * kw * channels, layer.filters)

        self.folded: FlatProduct | None = None
        self.classes: FloatArray | None = None
        if layer.pooling is Pooling.GLOBAL_AVERAGE and not self.gap_saturates:
            folded = np.zeros((self.input_size + 1, layer.filters), dtype=np.int64)
            np.add.at(folded, self.gather.reshape(-1), np.tile(matrix, (positions, 1)))
            self._fold(folded[:-1], (height * width, channels, layer.filters))
        self.matrix = np.ascontiguousarray(matrix.astype(self.dtype))
        self.matrix_t = np.ascontiguousarray(self.matrix.T)
        self.gather_t = np.ascontiguousarray(self.gather.T)
        self.pool: _Pool | None = None
        if layer.pooling is Pooling.MAX:
            self.pool = self._max_pool_plan(layer)

    def _fold(self, folded: np.ndarray, dims: tuple[int, int, int]) -> None:
        """Use the folded (H*W*C, F) matrix directly, or, when input positions share
        the same block of it (with stride s, interior positions repeat with period
        s), sum the input over each class of positions first and multiply the
        (classes, C) sums by one block per class: far fewer operations."""
        area, channels, filters = dims
        blocks, inverse = np.unique(
            folded.reshape(area, channels * filters), axis=0, return_inverse=True
        )
        count = blocks.shape[0]
        if count * area * channels + count * channels * filters < area * channels * filters:
            membership = np.zeros((count, area), dtype=self.dtype)
            membership[inverse.reshape(-1), np.arange(area)] = 1
            self.classes = membership
            self.class_matrix = np.ascontiguousarray(
                blocks.reshape(count * channels, filters).astype(self.dtype)
            )
            self.class_shape = (area, channels)
        else:
            self.folded = FlatProduct(folded.astype(self.dtype))

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

    def potentials(self, x: np.ndarray) -> FloatArray:
        """Potentials at every output position, before pooling: (N, out_h, out_w, F)."""
        n = x.shape[0]
        buffer = np.empty((n, self.input_size + 1), dtype=self.dtype)
        buffer[:, :-1] = x.reshape(n, -1)
        buffer[:, -1] = 0
        if n == 1:
            # one frame: filters x taps @ taps x positions runs twice as fast as
            # the transposed product at these sizes (measured)
            p = self.matrix_t @ buffer[0].take(self.gather_t)
            return p.T.reshape(1, self.out_h, self.out_w, -1)
        cols = buffer[:, self.gather]
        p = cols.reshape(-1, cols.shape[2]) @ self.matrix
        return p.reshape(n, self.out_h, self.out_w, -1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.classes is not None:
            n = x.shape[0]
            levels = x.reshape(n, *self.class_shape).astype(self.dtype)
            sums = self.classes @ levels[0] if n == 1 else np.matmul(self.classes, levels)
            p = (sums.reshape(n, -1) @ self.class_matrix).reshape(n, 1, 1, -1)
        elif self.folded is not None:
            p = self.folded(x.reshape(x.shape[0], -1)).reshape(x.shape[0], 1, 1, -1)
        elif self.gap_saturates:
            p = _saturating_sum(self.potentials(x))
        else:
            p = self.potentials(x)
            if self.pool is not None:
                p = _max_pool(p, self.pool)
                if self.may_saturate:
                    p = np.clip(p, POTENTIAL_MIN, POTENTIAL_MAX)
        return self._finish(p)


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
        boundaries = _boundaries(layer.activation, layer.threshold, layer.name)
        weights = layer.weights.astype(np.int64)
        bound = float(np.abs(weights).sum(axis=0).max()) * input_max
        self.may_saturate = bound > POTENTIAL_MAX
        self.dtype = _compute_dtype(bound, boundaries)
        self.boundaries = None if boundaries is None else boundaries.astype(self.dtype)
        # Akida row (c*W + w)*H + h holds input (h, w, c); reorder rows to C order.
        h, w, c = np.meshgrid(
            np.arange(height), np.arange(width), np.arange(channels), indexing="ij"
        )
        fortran_rows = ((c * width + w) * height + h).reshape(-1)
        self.product = FlatProduct(weights[fortran_rows].astype(self.dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        p = self.product(x.reshape(n, -1)).reshape(n, 1, 1, -1)
        if self.may_saturate:
            p = np.clip(p, POTENTIAL_MIN, POTENTIAL_MAX)
        return self._finish(p)
