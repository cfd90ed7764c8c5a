"""Program <-> akida.Model, variable for variable."""

from __future__ import annotations

from typing import Any

import numpy as np

from spikefleet.brainchip._akida import require_akida
from spikefleet.errors import UnsupportedLayerError
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
from spikefleet.program.validate import validate

SUPPORTED = "InputData, Convolutional, FullyConnected"


def to_akida(program: Program) -> Any:
    """An ``akida.Model`` computing exactly what ``program`` computes."""
    akida = require_akida("converting a program to an akida model")
    validate(program)
    model = akida.Model()
    for layer in program.layers:
        model.add(_akida_layer(akida, layer))
        if isinstance(layer, InputData):
            continue
        target = model.layers[-1]
        weights = layer.weights
        if isinstance(layer, FullyConnected):
            weights = weights.reshape(1, 1, *weights.shape)
        target.variables["weights"] = np.ascontiguousarray(weights, dtype=np.int8)
        target.variables["threshold"] = np.ascontiguousarray(layer.threshold, dtype=np.int32)
        if layer.activation is not None:
            target.variables["act_step"] = np.ascontiguousarray(
                layer.activation.step, dtype=np.float32
            )
    return model


def _akida_layer(akida: Any, layer: Layer) -> Any:
    if isinstance(layer, InputData):
        return akida.InputData(
            input_shape=tuple(layer.shape), input_bits=layer.bits, name=layer.name
        )
    act = layer.activation
    if isinstance(layer, FullyConnected):
        return akida.FullyConnected(
            units=layer.units,
            name=layer.name,
            weights_bits=layer.weights_bits,
            activation=act is not None,
            act_bits=act.bits if act else 1,
        )
    pool_type = {
        Pooling.NONE: akida.PoolType.NoPooling,
        Pooling.MAX: akida.PoolType.Max,
        Pooling.GLOBAL_AVERAGE: akida.PoolType.Average,
    }[layer.pooling]
    pool_size = (layer.pool_size,) * 2 if layer.pooling is Pooling.MAX else (-1, -1)
    pool_stride = (layer.pool_stride,) * 2 if layer.pooling is Pooling.MAX else (-1, -1)
    return akida.Convolutional(
        kernel_size=layer.kernel_size,
        filters=layer.filters,
        name=layer.name,
        padding=akida.Padding.Same if layer.padding is Padding.SAME else akida.Padding.Valid,
        kernel_stride=(layer.stride, layer.stride),
        weights_bits=layer.weights_bits,
        pool_size=pool_size,
        pool_type=pool_type,
        pool_stride=pool_stride,
        activation=act is not None,
        act_bits=act.bits if act else 1,
    )


def from_akida(model: Any, name: str = "") -> Program:
    """The Program of an ``akida.Model`` made of InputData, Convolutional and
    FullyConnected layers; any other layer raises UnsupportedLayerError."""
    akida = require_akida("reading an akida model")
    layers: list[Layer] = []
    for index, source in enumerate(model.layers):
        kind = source.parameters.layer_type
        if kind == akida.LayerType.InputData and index == 0:
            layers.append(_input_layer(source))
        elif kind == akida.LayerType.Convolutional and index > 0:
            layers.append(_conv_layer(akida, source))
        elif kind == akida.LayerType.FullyConnected and index > 0:
            layers.append(_dense_layer(source))
        else:
            where = "as the first layer" if index == 0 else f"at position {index}"
            raise UnsupportedLayerError(
                f"layer {source.name!r} of type {kind.name} {where} is not supported: "
                f"spikefleet programs carry Akida 1.0 {SUPPORTED} (InputData first)"
            )
    program = Program(name=name or "akida-model", layers=layers)
    validate(program)
    return program


def _input_layer(source: Any) -> InputData:
    p = source.parameters
    if p.input_signed:
        raise UnsupportedLayerError(
            f"layer {source.name!r} of type InputData has signed inputs; spikefleet programs "
            "take unsigned frames"
        )
    # akida's parameters call dims[0] "width"; output_dims is the (H, W, C) forward takes
    height, width, channels = (int(n) for n in source.output_dims)
    shape = (height, width, channels)
    return InputData(source.name, shape, int(p.input_bits))


def _activation(source: Any) -> Activation | None:
    p = source.parameters
    if not p.activation:
        return None
    return Activation(
        bits=int(p.act_bits),
        step=np.array(source.variables["act_step"], dtype=np.float32).reshape(-1),
    )


def _conv_layer(akida: Any, source: Any) -> Convolutional:
    p = source.parameters
    where = f"layer {source.name!r} of type Convolutional"
    if p.kernel_height != p.kernel_width or p.stride_x != p.stride_y:
        raise UnsupportedLayerError(
            f"{where} has a non-square kernel or stride; spikefleet programs carry square ones"
        )
    padding = akida.Padding(int(p.padding))
    if padding not in (akida.Padding.Same, akida.Padding.Valid):
        raise UnsupportedLayerError(f"{where} uses padding {padding.name}; use Same or Valid")
    pooling = {
        akida.PoolType.NoPooling: Pooling.NONE,
        akida.PoolType.Max: Pooling.MAX,
        akida.PoolType.Average: Pooling.GLOBAL_AVERAGE,
    }[akida.PoolType(int(p.pool_type))]
    pool_size = pool_stride = 0
    if pooling is Pooling.MAX:
        if p.pooling_height != p.pooling_width or p.pooling_stride_x != p.pooling_stride_y:
            raise UnsupportedLayerError(f"{where} has non-square max pooling")
        pool_size, pool_stride = int(p.pooling_height), int(p.pooling_stride_x)
    if pooling is Pooling.GLOBAL_AVERAGE and p.pooling_height != -1:
        raise UnsupportedLayerError(
            f"{where} has windowed average pooling; only global average pooling is supported"
        )
    return Convolutional(
        name=source.name,
        weights=np.array(source.variables["weights"], dtype=np.int8),
        threshold=np.array(source.variables["threshold"], dtype=np.int32).reshape(-1),
        weights_bits=int(p.weights_bits),
        stride=int(p.stride_x),
        padding=Padding.SAME if padding == akida.Padding.Same else Padding.VALID,
        pooling=pooling,
        pool_size=pool_size,
        pool_stride=pool_stride,
        activation=_activation(source),
    )


def _dense_layer(source: Any) -> FullyConnected:
    p = source.parameters
    weights = np.array(source.variables["weights"], dtype=np.int8)
    return FullyConnected(
        name=source.name,
        weights=weights.reshape(weights.shape[-2], weights.shape[-1]),
        threshold=np.array(source.variables["threshold"], dtype=np.int32).reshape(-1),
        weights_bits=int(p.weights_bits),
        activation=_activation(source),
    )
