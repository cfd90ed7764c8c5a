"""Random Akida 1.0 programs and inputs for the parity tests, from a seed."""

from __future__ import annotations

import numpy as np

from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Layer,
    Padding,
    Pooling,
    Program,
)
from spikefleet.program.packing import weight_range
from spikefleet.program.shapes import Shape, output_shape


def _weights(rng: np.random.Generator, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    low, high = weight_range(bits)
    return rng.integers(low, high + 1, size=shape).astype(np.int8)


def _activation(rng: np.random.Generator, bits: int, outputs: int) -> Activation:
    steps = rng.uniform(1 / 16, 12.0, outputs)
    if rng.random() < 0.3:
        steps = rng.integers(1, 64, outputs) / 16
    return Activation(bits=bits, step=steps.astype(np.float32))


def _threshold(rng: np.random.Generator, fan_in: int, bits: int, filters: int) -> np.ndarray:
    """Thresholds of both signs around the scale of the layer's potentials."""
    scale = max(1.0, np.sqrt(fan_in) * (1 << bits))
    return np.round(rng.normal(0.0, scale, filters)).astype(np.int32)


def random_program(seed: int, *, last_activation: bool | None = None) -> Program:
    """A valid program of 1-4 layers: every kernel, stride, padding, pooling and bit
    width the engine supports; the last layer has no activation half of the time."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(8, 41))
    height, width = size, int(np.clip(size + rng.integers(-3, 4), 8, 40))
    channels = int(rng.choice([1, 2, 3, 8]))
    input_bits = int(rng.choice([1, 2, 4], p=[0.2, 0.2, 0.6]))
    layers: list[Layer] = [InputData("input", (height, width, channels), input_bits)]
    shape: Shape = (height, width, channels)
    count = int(rng.integers(1, 5))
    if last_activation is None:
        last_activation = bool(rng.random() < 0.5)
    for index in range(count):
        last = index == count - 1
        act_bits = int(rng.choice([1, 2, 4]))
        weights_bits = int(rng.choice([1, 2, 4]))
        filters = int(rng.choice([1, 4, 8, 16, 32, 64], p=[0.1, 0.2, 0.2, 0.2, 0.2, 0.1]))
        activation = None if last and not last_activation else _activation(rng, act_bits, filters)
        layer: Layer
        use_dense = index > 0 and rng.random() < 0.3 and shape[0] * shape[1] * shape[2] <= 4096
        if use_dense or (shape[0] < 2 and shape[1] < 2):
            fan_in = shape[0] * shape[1] * shape[2]
            layer = FullyConnected(
                f"dense{index}",
                _weights(rng, weights_bits, (fan_in, filters)),
                _threshold(rng, fan_in, weights_bits, filters),
                weights_bits=weights_bits,
                activation=activation,
            )
        else:
            kernel = int(rng.choice([k for k in (1, 3, 5) if k <= min(shape[0], shape[1])]))
            stride = int(rng.choice([1, 2])) if kernel > 1 else 1
            padding = Padding.SAME if rng.random() < 0.6 else Padding.VALID
            pooling = Pooling(rng.choice(["none", "max", "global_average"], p=[0.5, 0.3, 0.2]))
            pool_size = pool_stride = 0
            if pooling is Pooling.MAX:
                pool_size = int(rng.choice([2, 3]))
                pool_stride = int(rng.choice([1, 2, pool_size]))
            fan_in = kernel * kernel * shape[2]
            layer = Convolutional(
                f"conv{index}",
                _weights(rng, weights_bits, (kernel, kernel, shape[2], filters)),
                _threshold(rng, fan_in, weights_bits, filters),
                weights_bits=weights_bits,
                stride=stride,
                padding=padding,
                pooling=pooling,
                pool_size=pool_size,
                pool_stride=pool_stride,
                activation=activation,
            )
        try:
            shape = output_shape(layer, shape)
        except Exception:
            break
        layers.append(layer)
        if activation is None:
            break
    if len(layers) == 1:
        return random_program(seed + 1_000_003, last_activation=last_activation)
    return Program(name=f"generated-{seed}", layers=layers)


def random_frames(seed: int, program: Program, count: int) -> np.ndarray:
    """Sparse (DVS-like) or dense frames that fit the program's input bits."""
    rng = np.random.default_rng(seed)
    shape = (count, *program.input.shape)
    top = 1 << program.input.bits
    values = rng.integers(0, top, size=shape)
    density = float(rng.choice([0.02, 0.1, 0.3, 1.0]))
    return np.where(rng.random(shape) < density, values, 0).astype(np.uint8)
