"""Consistency of a Program: what every producer checks before anyone runs it.

The codec calls this on both sides (encode refuses, decode reports), and the
converter and the akida bridge call it on what they build. Limits are akida
2.19.3's for Akida 1.0 layers, as measured (see packing.py and shapes.py).

A program is a few hundred bytes however large its input: ``Input(20000,20000,2)``
followed by one small convolution is a 1 kB file whose engine needs gigabytes.
So validation also bounds the memory the engine would allocate for it
(:func:`engine_memory_bytes`) by a cap: ``max_engine_bytes`` where it is passed,
else ``SPIKEFLEET_MAX_ENGINE_BYTES`` from the environment, else 2 GiB; 0 = no cap.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from spikefleet.errors import ProgramFormatError
from spikefleet.events.spec import InputSpec
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    HardwareParts,
    InputData,
    Padding,
    Pooling,
    Program,
)
from spikefleet.program.packing import WEIGHT_BITS, weight_range
from spikefleet.program.shapes import Shape, output_shape

INPUT_BITS = (1, 2, 4)
ACTIVATION_BITS = (1, 2, 4)
MIN_ACT_STEP = 0.0625


def _fail(where: str, problem: str) -> ProgramFormatError:
    return ProgramFormatError(f"{where}: {problem}")


_U32_MAX = 2**32 - 1


def _check_uint(where: str, name: str, value: object, low: int = 0) -> None:
    """Integers the format stores as uint32."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _fail(where, f"{name} must be an int, got {value!r}")
    if not low <= int(value) <= _U32_MAX:
        raise _fail(where, f"{name} must be between {low} and {_U32_MAX}, got {value}")


def _check_str(where: str, name: str, value: object) -> None:
    if not isinstance(value, str):
        raise _fail(where, f"{name} must be a str, got {type(value).__name__}")


def _check_array(where: str, name: str, array: object, dtype: type, shape: tuple[int, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise _fail(where, f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.dtype(dtype):
        raise _fail(
            where,
            f"{name} must be {np.dtype(dtype).name}, got {array.dtype}; "
            f"convert with .astype(np.{np.dtype(dtype).name})",
        )
    if array.shape != shape:
        raise _fail(where, f"{name} has shape {array.shape}, expected {shape}")


def _check_weights(where: str, layer: Convolutional | FullyConnected) -> None:
    if layer.weights_bits not in WEIGHT_BITS:
        raise _fail(where, f"weights_bits must be one of {WEIGHT_BITS}, got {layer.weights_bits}")
    low, high = weight_range(layer.weights_bits)
    weights = layer.weights
    if weights.size and (int(weights.min()) < low or int(weights.max()) > high):
        bad = weights[(weights < low) | (weights > high)]
        raise _fail(
            where,
            f"weight value {int(bad.flat[0])} is outside [{low}, {high}], the range akida "
            f"accepts for {layer.weights_bits}-bit weights",
        )


def _check_activation(where: str, activation: Activation | None, outputs: int) -> None:
    if activation is None:
        return
    if not isinstance(activation, Activation):
        raise _fail(where, f"activation must be an Activation or None, got {activation!r}")
    if activation.bits not in ACTIVATION_BITS:
        raise _fail(
            where, f"activation bits must be one of {ACTIVATION_BITS}, got {activation.bits}"
        )
    _check_array(where, "activation step", activation.step, np.float32, (outputs,))
    if not np.all(np.isfinite(activation.step)) or np.any(activation.step < MIN_ACT_STEP):
        raise _fail(
            where,
            f"activation step values must be finite and at least {MIN_ACT_STEP} (1/16, "
            f"akida's minimum); got min {float(np.min(activation.step))}",
        )


def _check_conv(where: str, layer: Convolutional, previous: Shape) -> None:
    if not isinstance(layer.weights, np.ndarray) or layer.weights.ndim != 4:
        raise _fail(where, "weights must be a 4-d int8 array (kh, kw, in_channels, filters)")
    kh, kw, cin, filters = (int(n) for n in layer.weights.shape)
    if min(kh, kw, filters) < 1:
        raise _fail(where, f"weights shape {layer.weights.shape} has an empty dimension")
    if cin != previous[2]:
        raise _fail(
            where,
            f"weights expect {cin} input channels but the previous layer gives {previous[2]}",
        )
    _check_array(where, "weights", layer.weights, np.int8, (kh, kw, cin, filters))
    if not isinstance(layer.padding, Padding) or not isinstance(layer.pooling, Pooling):
        raise _fail(where, "padding and pooling must be Padding and Pooling members")
    _check_uint(where, "stride", layer.stride)
    _check_uint(where, "pool_size", layer.pool_size)
    _check_uint(where, "pool_stride", layer.pool_stride)
    if not 1 <= layer.stride <= min(kh, kw):
        raise _fail(
            where,
            f"stride {layer.stride} must be between 1 and the kernel size {kh}x{kw} "
            "(akida does not support strides larger than the kernel)",
        )
    _check_array(where, "threshold", layer.threshold, np.int32, (filters,))


def _check_dense(where: str, layer: FullyConnected, previous: Shape) -> None:
    if not isinstance(layer.weights, np.ndarray) or layer.weights.ndim != 2:
        raise _fail(where, "weights must be a 2-d int8 array (in_features, units)")
    rows, units = (int(n) for n in layer.weights.shape)
    features = previous[0] * previous[1] * previous[2]
    if rows != features:
        raise _fail(
            where,
            f"weights have {rows} rows but the previous layer gives {previous[0]}x"
            f"{previous[1]}x{previous[2]} = {features} features",
        )
    if units < 1:
        raise _fail(where, "a FullyConnected layer needs at least one unit")
    _check_array(where, "weights", layer.weights, np.int8, (rows, units))
    _check_array(where, "threshold", layer.threshold, np.int32, (units,))


MAX_ENGINE_BYTES_ENV = "SPIKEFLEET_MAX_ENGINE_BYTES"
DEFAULT_MAX_ENGINE_BYTES = 2 * 1024**3
ENGINE_BATCH = 256  # frames the agent runs in one engine batch at most (its read-ahead)


def default_max_engine_bytes() -> int:
    """The cap when none is passed: SPIKEFLEET_MAX_ENGINE_BYTES, else 2 GiB (0 = no cap)."""
    text = os.environ.get(MAX_ENGINE_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_ENGINE_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise ProgramFormatError(
            f"{MAX_ENGINE_BYTES_ENV}={text!r} is not a number of bytes"
        ) from None
    return max(0, value)


def _conv_positions(size: int, kernel: int, layer: Convolutional) -> int:
    if layer.padding is Padding.VALID:
        return max(0, (size - kernel) // layer.stride + 1)
    return -(-size // layer.stride)


def engine_memory_bytes(program: Program, shapes: list[Shape]) -> int:
    """About what spikefleet's engine allocates for ``program``: its compiled tables plus
    the working arrays of an ENGINE_BATCH-frame batch (an upper estimate, not a measure)."""
    total = 0
    previous = shapes[0]
    total += ENGINE_BATCH * math.prod(previous)  # the uint8 input frames
    for layer, shape in zip(program.layers[1:], shapes[1:], strict=True):
        height, width, channels = previous
        if isinstance(layer, Convolutional):
            kh, kw, _, filters = (int(n) for n in layer.weights.shape)
            out_h = _conv_positions(height, kh, layer)
            out_w = _conv_positions(width, kw, layer)
            positions = out_h * out_w
            if layer.pooling is Pooling.GLOBAL_AVERAGE:
                # per input position, its folded (C, F) weights, int64, and their uniques
                total += 3 * 8 * height * width * channels * filters
            else:
                # gather tables: index arrays per (position, tap) pair, and the lanes
                total += 80 * positions * kh * kw + 8 * kh * kw * channels * filters
            # int32 potentials at every position before pooling, and a padded copy
            total += ENGINE_BATCH * 2 * 4 * positions * filters
        elif isinstance(layer, FullyConnected):
            rows = height * width * channels
            total += 3 * 8 * rows * int(layer.units) + 8 * rows
            total += ENGINE_BATCH * 4 * int(layer.units)
        total += ENGINE_BATCH * 4 * math.prod(shape)
        previous = shape
    return total


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_engine_memory(
    program: Program, shapes: list[Shape], max_engine_bytes: int | None = None
) -> None:
    """Refuse a program whose engine would need more memory than the cap."""
    cap = default_max_engine_bytes() if max_engine_bytes is None else max_engine_bytes
    if cap <= 0:
        return
    needed = engine_memory_bytes(program, shapes)
    if needed > cap:
        raise ProgramFormatError(
            f"program {program.name!r} (input {'x'.join(map(str, shapes[0]))}) would need about "
            f"{_size(needed)} of engine memory, more than the cap of {_size(cap)}; make the "
            f"input smaller (crop or downsample the sensor), or raise the cap: "
            f"{MAX_ENGINE_BYTES_ENV} (agents: max_engine_bytes in agent.toml)"
        )


def validate(program: Program, *, max_engine_bytes: int | None = None) -> list[Shape]:
    """Raise ProgramFormatError naming the first inconsistency; return the layer shapes.
    ``max_engine_bytes`` caps the engine memory the program needs (None: the default,
    see :func:`default_max_engine_bytes`; 0: no cap)."""
    if not isinstance(program, Program):
        raise ProgramFormatError(f"expected a Program, got {type(program).__name__}")
    _check_str("program", "name", program.name)
    if not program.layers or not isinstance(program.layers[0], InputData):
        raise ProgramFormatError("a program's first layer must be InputData")
    names: set[str] = set()
    shapes: list[Shape] = []
    previous: Shape | None = None
    for index, layer in enumerate(program.layers):
        where = f"layer {index} ({getattr(layer, 'name', '?')!r})"
        if not isinstance(layer, InputData | Convolutional | FullyConnected):
            raise _fail(where, f"unsupported layer type {type(layer).__name__}")
        _check_str(where, "name", layer.name)
        if not layer.name or layer.name in names:
            raise _fail(where, "layer names must be non-empty and unique")
        names.add(layer.name)
        if isinstance(layer, InputData):
            if previous is not None:
                raise _fail(where, "InputData may only be the first layer")
            if not isinstance(layer.shape, tuple | list) or len(layer.shape) != 3:
                raise _fail(where, f"input shape must be 3 ints (H, W, C), got {layer.shape!r}")
            for axis, size in zip("HWC", layer.shape, strict=True):
                _check_uint(where, f"input {axis}", size, low=1)
            if layer.bits not in INPUT_BITS:
                raise _fail(where, f"input bits must be one of {INPUT_BITS}, got {layer.bits}")
        else:
            assert previous is not None
            before = program.layers[index - 1]
            if not isinstance(before, InputData) and before.activation is None:
                raise _fail(
                    where,
                    f"follows {before.name!r}, which has no activation: its int32 potentials "
                    "cannot feed another layer on akida; only the last layer may omit its "
                    "activation",
                )
            if isinstance(layer, Convolutional):
                _check_conv(where, layer, previous)
            else:
                _check_dense(where, layer, previous)
            _check_weights(where, layer)
        previous = output_shape(layer, previous)
        if not isinstance(layer, InputData):
            _check_activation(where, layer.activation, previous[2])
        shapes.append(previous)
    _check_outputs(program, shapes[-1])
    _check_provenance(program)
    _check_input_spec(program)
    check_engine_memory(program, shapes, max_engine_bytes)
    return shapes


def _check_input_spec(program: Program) -> None:
    spec = program.input_spec
    if spec is None:
        return
    if not isinstance(spec, InputSpec):
        raise ProgramFormatError("input_spec must be an InputSpec or None")
    if tuple(spec.input_shape) != tuple(program.input.shape):
        raise ProgramFormatError(
            f"input spec makes frames of {spec.input_shape} (H, W, C) but the program's input "
            f"is {tuple(program.input.shape)}: fix the spec's sensor_size, crop, downsample "
            "or polarity"
        )
    if spec.clip_bits is None or spec.clip_bits > program.input.bits:
        raise ProgramFormatError(
            f"input spec clips counts to {spec.clip_bits} bits but the program's input takes "
            f"{program.input.bits}; set clip_bits to at most {program.input.bits}"
        )


def _check_outputs(program: Program, last: Shape) -> None:
    outputs = math.prod(last)
    if program.labels and len(program.labels) != outputs:
        raise ProgramFormatError(
            f"program has {len(program.labels)} labels but its last layer gives {outputs} outputs"
        )
    if not all(isinstance(label, str) for label in program.labels):
        raise ProgramFormatError("labels must be strings")
    if program.output_scales is not None:
        _check_array(
            "output_scales", "output_scales", program.output_scales, np.float32, (last[2],)
        )


def _check_provenance(program: Program) -> None:
    fidelity = program.provenance.fidelity
    if fidelity is not None:
        if not isinstance(fidelity, dict):
            raise ProgramFormatError("provenance.fidelity must be a dict (JSON object) or None")
        try:
            json.dumps(fidelity, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ProgramFormatError(f"provenance.fidelity is not JSON data: {exc}") from None
    for field in ("source_sha256", "converter_version", "created"):
        _check_str("provenance", field, getattr(program.provenance, field))
    hardware = program.hardware
    if hardware is not None:
        if not isinstance(hardware, HardwareParts):
            raise ProgramFormatError("hardware must be HardwareParts or None")
        _check_str("hardware", "device", hardware.device)
        _check_uint("hardware", "np_count", hardware.np_count)
        if not (
            isinstance(hardware.program_info, bytes) and isinstance(hardware.program_data, bytes)
        ):
            raise ProgramFormatError("hardware program_info and program_data must be bytes")
    if program.fbz is not None and not isinstance(program.fbz, bytes):
        raise ProgramFormatError("fbz must be bytes or None")
