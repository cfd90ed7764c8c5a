"""Output shape of every layer, with akida 2.19.3's arithmetic (verified in tests).

Convolution: valid -> floor((H - k) / s) + 1, same -> ceil(H / s).
Max pooling follows the layer's padding: valid -> floor((H - p) / ps) + 1,
same -> ceil(H / ps). Global average pooling -> 1 x 1. FullyConnected -> 1 x 1 x units.
"""

from __future__ import annotations

from spikefleet.errors import ProgramFormatError
from spikefleet.program.model import (
    Convolutional,
    FullyConnected,
    InputData,
    Layer,
    Padding,
    Pooling,
    Program,
)

Shape = tuple[int, int, int]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _conv_dim(size: int, kernel: int, layer: Convolutional) -> int:
    if layer.padding is Padding.VALID:
        out = (size - kernel) // layer.stride + 1
    else:
        out = _ceil_div(size, layer.stride)
    if layer.pooling is Pooling.MAX:
        if layer.padding is Padding.VALID:
            out = (out - layer.pool_size) // layer.pool_stride + 1
        else:
            out = _ceil_div(out, layer.pool_stride)
    return out


def output_shape(layer: Layer, input_shape: Shape | None) -> Shape:
    """The (H, W, C) a layer produces from ``input_shape`` (None for InputData)."""
    if isinstance(layer, InputData):
        return (int(layer.shape[0]), int(layer.shape[1]), int(layer.shape[2]))
    assert input_shape is not None
    if isinstance(layer, FullyConnected):
        return (1, 1, layer.units)
    if layer.stride < 1:
        raise ProgramFormatError(f"layer {layer.name!r}: stride must be >= 1, got {layer.stride}")
    if layer.pooling is Pooling.MAX and (layer.pool_size < 1 or layer.pool_stride < 1):
        raise ProgramFormatError(
            f"layer {layer.name!r}: max pooling needs pool_size and pool_stride >= 1, got "
            f"{layer.pool_size} and {layer.pool_stride}"
        )
    kh, kw = layer.kernel_size
    if layer.pooling is Pooling.GLOBAL_AVERAGE:
        height = width = 1
        inner = (_conv_dim(input_shape[0], kh, layer), _conv_dim(input_shape[1], kw, layer))
    else:
        height = _conv_dim(input_shape[0], kh, layer)
        width = _conv_dim(input_shape[1], kw, layer)
        inner = (height, width)
    if min(inner) < 1:
        raise ProgramFormatError(
            f"layer {layer.name!r}: a {kh}x{kw} kernel with stride {layer.stride}, "
            f"{layer.padding.value} padding and {layer.pooling.value} pooling on a "
            f"{input_shape[0]}x{input_shape[1]} input leaves no output; use a smaller "
            "kernel, stride or pool, or same padding"
        )
    return (height, width, layer.filters)


def layer_output_shapes(program: Program) -> list[Shape]:
    """One (H, W, C) per layer of ``program``, ``layers[0]`` (the input) included."""
    shapes: list[Shape] = []
    previous: Shape | None = None
    for layer in program.layers:
        previous = output_shape(layer, previous)
        shapes.append(previous)
    return shapes
