"""Layers compiled once at Engine construction into int32 weight tables for the
C kernels of ``_kernels.c``.

Akida conventions (measured, see docs/akida-semantics.md):

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

Speed: a frame is first listed as its non-zero (channel, value) bytes per
pixel (DVS frames and spike maps are mostly zeros). A sparse frame is then
scattered (each entry adds its weight rows to the positions that read it); a
denser one is gathered (each position sums the entries its taps read, a block
of filters at a time in registers). FullyConnected is a convolution of one
position. The activation is fused into the kernels. A convolution with global
pooling that cannot saturate is folded: the pooled sum is linear in the input,
and input positions that see the same taps (all interior positions of one
stride phase) share one (C, F) block of weights, so a frame costs one add per
input byte plus a (classes * C, F) product. Max pooling and saturating global
pooling run in numpy on the kernel's potentials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spikefleet.engine import _kernels
from spikefleet.engine.activation import level_boundaries, quantize
from spikefleet.errors import EngineError
from spikefleet.program.model import Activation, Convolutional, FullyConnected, Padding, Pooling
from spikefleet.program.shapes import Shape

POTENTIAL_MIN = -(2**19)
POTENTIAL_MAX = 2**19 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
LANES = 8  # _kernels.c pads weight rows to a multiple of this many filters
NARROW_LANES = 16  # ... or of this many when every sum fits int16
NARROW_BOUND = 2**15

Int32Array = npt.NDArray[np.int32]


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


def _boundaries(
    activation: Activation | None, threshold: np.ndarray, name: str
) -> Int32Array | None:
    """Integer level boundaries (levels, channels), clipped to int32: a potential
    never reaches either end of the int32 range (see ``_check_bound``)."""
    if activation is None:
        return None
    rows = level_boundaries(activation, threshold, f"layer {name!r}")
    return np.ascontiguousarray(np.clip(rows, INT32_MIN, INT32_MAX).astype(np.int32))


def _check_bound(bound: float, name: str) -> None:
    if bound >= INT32_MAX:
        raise EngineError(
            f"layer {name!r}: potentials could reach {bound:.0f}, beyond int32; "
            "use fewer input channels or narrower weights"
        )


class CompiledLayer:
    """One layer: ``forward(x)`` maps (N, H, W, C) uint8 levels to outputs
    (N, h, w, c): uint8 levels when the layer has an activation, int32
    potentials otherwise."""

    name: str
    output_shape: Shape
    has_activation: bool
    boundaries: Int32Array | None

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _empty(self, n: int) -> np.ndarray:
        dtype = np.uint8 if self.boundaries is not None else np.int32
        return np.empty((n, *self.output_shape), dtype=dtype)

    def _finish(self, p: np.ndarray) -> np.ndarray:
        if self.boundaries is None:
            return p.astype(np.int32)
        return quantize(p, self.boundaries)


def conv_tables(
    weights: np.ndarray,
    channels: int,
    *,
    pair_position: np.ndarray,
    pair_pixel: np.ndarray,
    pair_tap: np.ndarray,
    positions: int,
    pixels: int,
    lanes: int = LANES,
) -> dict[str, np.ndarray]:
    """The int32 tables of ``_kernels.compile_conv`` for weights (taps, channels,
    filters) and the (output position, input pixel, tap) triples of a convolution;
    weight rows are padded to a multiple of ``lanes`` filters."""
    taps, _, filters = weights.shape
    padded = -(-filters // lanes) * lanes
    rows = np.zeros((taps, channels, padded), dtype=np.int32)
    rows[:, :, :filters] = weights
    by_position = np.argsort(pair_position, kind="stable")
    by_pixel = np.argsort(pair_pixel, kind="stable")
    index = np.arange(pixels * channels, dtype=np.int32)

    def starts(keys: np.ndarray, size: int) -> np.ndarray:
        table = np.zeros(size + 1, dtype=np.int32)
        np.cumsum(np.bincount(keys, minlength=size), out=table[1:])
        return table

    def int32(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values.astype(np.int32))

    return {
        "weights": rows,
        "pixel_of": index // channels,
        "channel_of": (index % channels) * padded,
        "pair_start": starts(pair_position, positions),
        "pair_pixel": int32(pair_pixel[by_position]),
        "pair_tap": int32(pair_tap[by_position] * channels * padded),
        "read_start": starts(pair_pixel, pixels),
        "read_out": int32(pair_position[by_pixel] * padded),
        "read_tap": int32(pair_tap[by_pixel] * channels * padded),
    }


class ConvKernel:
    """A convolution compiled into ``_kernels`` (which copies and checks the tables)."""

    def __init__(
        self,
        tables: dict[str, np.ndarray],
        *,
        positions: int,
        filters: int,
        boundaries: Int32Array | None,
        binary: bool,
        saturate: bool,
        narrow: bool,
    ) -> None:
        t = tables
        self._kernel = _kernels.compile_conv(
            t["weights"], boundaries, t["pixel_of"], t["channel_of"], t["pair_start"],
            t["pair_pixel"], t["pair_tap"], t["read_start"], t["read_out"], t["read_tap"],
            positions, filters, t["weights"].shape[2], binary, saturate, narrow,
        )  # fmt: skip

    def run(self, x: np.ndarray, out: np.ndarray, *, activate: bool) -> None:
        _kernels.conv(self._kernel, np.ascontiguousarray(x), out, x.shape[0], activate)


class ConvLayer(CompiledLayer):
    def __init__(self, layer: Convolutional, input_shape: Shape, input_max: int, output: Shape):
        self.name = layer.name
        self.output_shape = output
        self.input_shape = input_shape
        height, width, _ = input_shape
        kh, kw = layer.kernel_size
        self.stride = layer.stride
        if layer.padding is Padding.SAME:
            self.out_h, self.top, _ = same_padding(height, kh, self.stride)
            self.out_w, self.left, _ = same_padding(width, kw, self.stride)
        else:
            self.out_h = (height - kh) // self.stride + 1
            self.out_w = (width - kw) // self.stride + 1
            self.top = self.left = 0
        self.has_activation = layer.activation is not None
        self.boundaries = _boundaries(layer.activation, layer.threshold, layer.name)
        weights = layer.weights.astype(np.int64)
        bound = float(np.abs(weights).sum(axis=(0, 1, 2)).max()) * input_max
        _check_bound(bound, layer.name)
        self.pooling = layer.pooling
        self.filters = layer.filters
        self.binary = input_max == 1
        self.narrow = bound < NARROW_BOUND
        self.may_saturate = bound > POTENTIAL_MAX
        pooled_bound = bound * self.out_h * self.out_w
        self.gap_saturates = (
            layer.pooling is Pooling.GLOBAL_AVERAGE and pooled_bound > POTENTIAL_MAX
        )
        self.taps = np.ascontiguousarray(weights[::-1, ::-1].astype(np.int32))
        self.classes: Int32Array | None = None
        if layer.pooling is Pooling.GLOBAL_AVERAGE and not self.gap_saturates:
            self._fold()
        else:
            self._gather_tables()
        self.pool = self._max_pool_plan(layer) if layer.pooling is Pooling.MAX else None

    def _fold(self) -> None:
        """Per input position, the (C, F) block of weights its value adds to the
        pooled sum; positions with equal blocks share one class."""
        height, width, channels = self.input_shape
        kh, kw = self.taps.shape[:2]
        folded = np.zeros((height, width, channels, self.filters), dtype=np.int64)
        for i in range(kh):
            for j in range(kw):
                # Tap (i, j) of output (oy, ox) reads input (oy*s + i - top, ox*s + j - left).
                ys = np.arange(self.out_h) * self.stride + i - self.top
                xs = np.arange(self.out_w) * self.stride + j - self.left
                ys, xs = ys[(ys >= 0) & (ys < height)], xs[(xs >= 0) & (xs < width)]
                folded[np.ix_(ys, xs)] += self.taps[i, j]
        blocks, inverse = np.unique(
            folded.reshape(height * width, channels * self.filters), axis=0, return_inverse=True
        )
        self.classes = np.ascontiguousarray(inverse.reshape(-1).astype(np.int32))
        self.class_weights = np.ascontiguousarray(blocks.astype(np.int32))

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

    def _gather_tables(self) -> None:
        """For each output position, the (input pixel, tap) pairs it reads, as
        pixel indices and offsets into the padded weights (see ``_kernels.conv``)."""
        height, width, channels = self.input_shape
        kh, kw = self.taps.shape[:2]
        oy, ox, i, j = np.meshgrid(
            np.arange(self.out_h), np.arange(self.out_w), np.arange(kh), np.arange(kw),
            indexing="ij",
        )  # fmt: skip
        # Tap (i, j) of output (oy, ox) reads input (oy*s + i - top, ox*s + j - left).
        y, x = oy * self.stride + i - self.top, ox * self.stride + j - self.left
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        positions = self.out_h * self.out_w
        tables = conv_tables(
            self.taps.reshape(kh * kw, channels, self.filters),
            channels,
            pair_position=(oy * self.out_w + ox)[inside],
            pair_pixel=(y * width + x)[inside],
            pair_tap=(i * kw + j)[inside],
            positions=positions,
            pixels=height * width,
            lanes=NARROW_LANES if self.narrow else LANES,
        )
        self.kernel = ConvKernel(
            tables,
            positions=positions,
            filters=self.filters,
            boundaries=self.boundaries,
            binary=self.binary,
            saturate=False,
            narrow=self.narrow,
        )

    def potentials(self, x: np.ndarray, *, activate: bool = False) -> np.ndarray:
        """The convolution at every output position, before pooling: int32
        (N, out_h, out_w, F), or uint8 levels when ``activate``."""
        dtype = np.uint8 if activate else np.int32
        out = np.empty((x.shape[0], self.out_h, self.out_w, self.filters), dtype=dtype)
        self.kernel.run(x, out, activate=activate)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.classes is not None:
            n = x.shape[0]
            out = self._empty(n)
            _kernels.pooled(
                np.ascontiguousarray(x), self.classes, self.class_weights, out, self.boundaries,
                n, self.classes.size, self.input_shape[2], self.class_weights.shape[0],
                self.filters,
            )  # fmt: skip
            return out
        if self.gap_saturates:
            return self._finish(_saturating_sum(self.potentials(x)))
        if self.pool is None:
            return self.potentials(x, activate=self.boundaries is not None)
        p = _max_pool(self.potentials(x), self.pool)
        if self.may_saturate:
            p = np.clip(p, POTENTIAL_MIN, POTENTIAL_MAX)
        return self._finish(p)


def _saturating_sum(p: np.ndarray) -> np.ndarray:
    """Akida's global pooling sum: row-major over positions, saturating at 20 bits."""
    acc = np.zeros((p.shape[0], 1, 1, p.shape[3]), dtype=np.int64)
    for row in range(p.shape[1]):
        for col in range(p.shape[2]):
            acc[:, 0, 0] += p[:, row, col]
            np.clip(acc, POTENTIAL_MIN, POTENTIAL_MAX, out=acc)
    return acc


def _max_pool(p: np.ndarray, pool: _Pool) -> np.ndarray:
    top, bottom, left, right = pool.pad
    if top or bottom or left or right:
        n, h, w, c = p.shape
        padded = np.full((n, h + top + bottom, w + left + right, c), INT32_MIN, dtype=p.dtype)
        padded[:, top : top + h, left : left + w] = p
        p = padded
    out_h, out_w = pool.out
    s = pool.stride
    result: np.ndarray | None = None
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
        self.boundaries = _boundaries(layer.activation, layer.threshold, layer.name)
        weights = layer.weights.astype(np.int64)
        bound = float(np.abs(weights).sum(axis=0).max()) * input_max
        _check_bound(bound, layer.name)
        self.may_saturate = bound > POTENTIAL_MAX
        # Akida row (c*W + w)*H + h holds input (h, w, c); reorder rows to C order.
        h, w, c = np.meshgrid(
            np.arange(height), np.arange(width), np.arange(channels), indexing="ij"
        )
        fortran_rows = ((c * width + w) * height + h).reshape(-1)
        inputs = height * width * channels
        one = np.zeros(1, np.intp)
        tables = conv_tables(
            weights[fortran_rows][None],
            inputs,
            pair_position=one,
            pair_pixel=one,
            pair_tap=one,
            positions=1,
            pixels=1,
            lanes=NARROW_LANES if bound < NARROW_BOUND else LANES,
        )
        self.kernel = ConvKernel(
            tables,
            positions=1,
            filters=layer.units,
            boundaries=self.boundaries,
            binary=input_max == 1,
            saturate=self.may_saturate,
            narrow=bound < NARROW_BOUND,
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self._empty(x.shape[0])
        self.kernel.run(x, out, activate=self.boundaries is not None)
        return out
