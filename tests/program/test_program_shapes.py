"""layer_output_shapes and validate agree with akida 2.19.3 about every layer's shape,
and every program validate accepts carries variables akida accepts."""

from __future__ import annotations

import itertools

import akida
import numpy as np
import pytest
from hypothesis import given, settings
from support.program_factory import architectures

from spikefleet.errors import ProgramFormatError
from spikefleet.program import (
    Convolutional,
    FullyConnected,
    InputData,
    Padding,
    Pooling,
    Program,
    layer_output_shapes,
    validate,
)

_PADDING = {Padding.SAME: akida.Padding.Same, Padding.VALID: akida.Padding.Valid}


def akida_model(program: Program) -> akida.Model:
    model = akida.Model()
    for layer in program.layers:
        if isinstance(layer, InputData):
            model.add(akida.InputData(input_shape=layer.shape, input_bits=layer.bits))
            continue
        act = {"activation": layer.activation is not None}
        if layer.activation is not None:
            act["act_bits"] = layer.activation.bits
        if isinstance(layer, FullyConnected):
            model.add(
                akida.FullyConnected(
                    name=layer.name, units=layer.units, weights_bits=layer.weights_bits, **act
                )
            )
            continue
        pool: dict[str, object] = {}
        if layer.pooling is Pooling.MAX:
            pool = {
                "pool_type": akida.PoolType.Max,
                "pool_size": (layer.pool_size, layer.pool_size),
                "pool_stride": (layer.pool_stride, layer.pool_stride),
            }
        elif layer.pooling is Pooling.GLOBAL_AVERAGE:
            pool = {"pool_type": akida.PoolType.Average}
        model.add(
            akida.Convolutional(
                name=layer.name,
                filters=layer.filters,
                kernel_size=layer.kernel_size,
                kernel_stride=(layer.stride, layer.stride),
                padding=_PADDING[layer.padding],
                weights_bits=layer.weights_bits,
                **pool,
                **act,
            )
        )
    return model


@settings(max_examples=80, deadline=None)
@given(architectures(max_channels=8))
def test_generated_architectures_have_akidas_shapes(program: Program) -> None:
    model = akida_model(program)
    assert layer_output_shapes(program) == [tuple(layer.output_dims) for layer in model.layers]


@settings(max_examples=60, deadline=None)
@given(architectures(max_channels=8))
def test_generated_programs_load_into_akida(program: Program) -> None:
    model = akida_model(program)
    for layer, target in zip(program.layers[1:], model.layers[1:], strict=True):
        assert isinstance(layer, Convolutional | FullyConnected)
        weights = layer.weights
        if isinstance(layer, FullyConnected):
            weights = weights.reshape(1, 1, *weights.shape)
        target.variables["weights"] = weights
        target.variables["threshold"] = layer.threshold
        if layer.activation is not None:
            target.variables["act_step"] = layer.activation.step
        assert np.array_equal(target.variables["weights"], weights)
        assert np.array_equal(target.variables["threshold"], layer.threshold)


def one_conv(
    size: int, kernel: int, stride: int, padding: Padding, pool: tuple[Pooling, int, int]
) -> Program:
    pooling, pool_size, pool_stride = pool
    return Program(
        name="sweep",
        layers=[
            InputData("in", (size, size + 3, 2), 4),
            Convolutional(
                "conv",
                np.zeros((kernel, kernel, 2, 3), np.int8),
                np.zeros(3, np.int32),
                stride=stride,
                padding=padding,
                pooling=pooling,
                pool_size=pool_size,
                pool_stride=pool_stride,
            ),
        ],
    )


POOLS = [
    (Pooling.NONE, 0, 0),
    (Pooling.MAX, 1, 1),
    (Pooling.MAX, 2, 1),
    (Pooling.MAX, 2, 2),
    (Pooling.MAX, 3, 2),
    (Pooling.MAX, 3, 3),
    (Pooling.GLOBAL_AVERAGE, 0, 0),
]


@pytest.mark.parametrize("padding", [Padding.SAME, Padding.VALID])
def test_convolution_geometry_sweep_matches_akida(padding: Padding) -> None:
    """Every small geometry: both accept with the same shape, or both refuse."""
    for size, kernel, stride, pool in itertools.product(range(1, 12), (1, 3, 5), (1, 2, 3), POOLS):
        program = one_conv(size, kernel, stride, padding, pool)
        try:
            ours: object = validate(program)[1]
        except ProgramFormatError:
            ours = "refused"
        try:
            theirs: object = tuple(akida_model(program).layers[1].output_dims)
        except (RuntimeError, ValueError):
            theirs = "refused"
        assert ours == theirs, (size, kernel, stride, padding, pool)
