"""Program <-> bytes, in the FlatBuffers layout of ``protos/program.fbs``.

Slots below are the field numbers of that schema (declaration order; a union
takes two: its type, then its value). ``decode`` reads through the
bounds-checked :mod:`flatreader`, so any malformed input becomes
ProgramFormatError, and it validates the decoded program.
"""

from __future__ import annotations

import json
from typing import Any

import flatbuffers
import numpy as np

from spikefleet.errors import ProgramFormatError
from spikefleet.events.spec import (
    Binning,
    CropBox,
    Decision,
    InputSpec,
    InputSpecError,
    Polarity,
    WindowStart,
)
from spikefleet.program import packing
from spikefleet.program.flatreader import Buffer, Table
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    HardwareParts,
    InputData,
    Layer,
    Padding,
    Pooling,
    Program,
    Provenance,
)
from spikefleet.program.validate import validate

FILE_IDENTIFIER = b"SFPG"
FORMAT_VERSION = 1

_PADDING = [Padding.SAME, Padding.VALID]
_POOLING = [Pooling.NONE, Pooling.MAX, Pooling.GLOBAL_AVERAGE]
# LayerBody union members, in schema order (0 is the union's NONE).
_BODY_INPUT, _BODY_CONV, _BODY_DENSE = 1, 2, 3
# InputSpec enums, in schema order.
_BINNING = [Binning.TIME_WINDOW, Binning.EVENT_COUNT, Binning.N_TIME_BINS, Binning.N_EVENT_BINS]
_WINDOW_START = [WindowStart.FIRST_EVENT, WindowStart.START_TIME, WindowStart.ABSOLUTE]
_POLARITY = [Polarity.SPLIT, Polarity.MERGED]
_DECISION = [Decision.SAMPLE_SUM, Decision.PER_FRAME, Decision.ROLLING_SUM]


class _Slots:
    # Each class mirrors one table of program.fbs.
    class PackedWeights:
        bits, shape, data = 0, 1, 2

    class Activation:
        bits, step = 0, 1

    class InputLayer:
        height, width, channels, bits = 0, 1, 2, 3

    class ConvLayer:
        weights, threshold, stride, padding, pooling = 0, 1, 2, 3, 4
        pool_size, pool_stride, activation = 5, 6, 7

    class DenseLayer:
        weights, threshold, activation = 0, 1, 2

    class Layer:
        name, body_type, body = 0, 1, 2

    class Provenance:
        source_sha256, converter_version, created, fidelity_json = 0, 1, 2, 3

    class HardwareParts:
        device, program_info, program_data, np_count = 0, 1, 2, 3

    class InputSpec:
        sensor_width, sensor_height, sensor_polarities, binning, amount = 0, 1, 2, 3, 4
        overlap, include_incomplete, window_start, start_time, end_time = 5, 6, 7, 8, 9
        has_end_time, crop_x, crop_y, crop_width, crop_height = 10, 11, 12, 13, 14
        downsample_x, downsample_y, polarity, clip_bits = 15, 16, 17, 18
        denoise_filter_time, refractory_delta, decision, rolling_frames = 19, 20, 21, 22
        allow_stream_override = 23

    class Program:
        format_version, name, layers, labels, output_scales = 0, 1, 2, 3, 4
        provenance, hardware, fbz, input_spec = 5, 6, 7, 8


_NUM_FIELDS = {
    "PackedWeights": 3,
    "Activation": 2,
    "InputLayer": 4,
    "ConvLayer": 8,
    "DenseLayer": 3,
    "Layer": 3,
    "Provenance": 4,
    "HardwareParts": 4,
    "InputSpec": 24,
    "Program": 9,
}


# ---------------------------------------------------------------- encoding


def _le(array: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))


class _Writer:
    def __init__(self) -> None:
        self.b = flatbuffers.Builder(4096)

    def string(self, text: str) -> int:
        return int(self.b.CreateString(text))

    def bytes(self, data: bytes) -> int:
        return int(self.b.CreateByteVector(data))

    def numbers(self, array: np.ndarray, dtype: str) -> int:
        return int(self.b.CreateNumpyVector(_le(array.reshape(-1), dtype)))

    def offsets(self, items: list[int]) -> int:
        self.b.StartVector(4, len(items), 4)
        for item in reversed(items):
            self.b.PrependUOffsetTRelative(item)
        return int(self.b.EndVector())

    def table(self, kind: str, fields: list[tuple[int, str, Any, Any]]) -> int:
        """Write a table; each field is (slot, kind, value, default)."""
        self.b.StartObject(_NUM_FIELDS[kind])
        for slot, how, value, default in fields:
            if value is None:
                continue
            if how == "offset":
                self.b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif how == "u8":
                self.b.PrependUint8Slot(slot, value, default)
            elif how == "u16":
                self.b.PrependUint16Slot(slot, value, default)
            elif how == "u32":
                self.b.PrependUint32Slot(slot, value, default)
            elif how == "u64":
                self.b.PrependUint64Slot(slot, value, default)
            elif how == "i64":
                self.b.PrependInt64Slot(slot, value, default)
            elif how == "f64":
                self.b.PrependFloat64Slot(slot, value, default)
            elif how == "bool":
                self.b.PrependBoolSlot(slot, value, default)
        return int(self.b.EndObject())

    def weights(self, layer: Convolutional | FullyConnected) -> int:
        s = _Slots.PackedWeights
        shape = self.numbers(np.asarray(layer.weights.shape), "u4")
        data = self.bytes(packing.pack(layer.weights, layer.weights_bits))
        return self.table(
            "PackedWeights",
            [
                (s.bits, "u8", layer.weights_bits, 0),
                (s.shape, "offset", shape, 0),
                (s.data, "offset", data, 0),
            ],
        )

    def activation(self, activation: Activation | None) -> int | None:
        if activation is None:
            return None
        s = _Slots.Activation
        step = self.numbers(activation.step, "f4")
        return self.table(
            "Activation", [(s.bits, "u8", activation.bits, 0), (s.step, "offset", step, 0)]
        )

    def layer(self, layer: Layer) -> int:
        if isinstance(layer, InputData):
            si = _Slots.InputLayer
            height, width, channels = (int(n) for n in layer.shape)
            body = self.table(
                "InputLayer",
                [
                    (si.height, "u32", height, 0),
                    (si.width, "u32", width, 0),
                    (si.channels, "u32", channels, 0),
                    (si.bits, "u8", layer.bits, 0),
                ],
            )
            kind = _BODY_INPUT
        elif isinstance(layer, Convolutional):
            sc = _Slots.ConvLayer
            weights = self.weights(layer)
            threshold = self.numbers(layer.threshold, "i4")
            activation = self.activation(layer.activation)
            body = self.table(
                "ConvLayer",
                [
                    (sc.weights, "offset", weights, 0),
                    (sc.threshold, "offset", threshold, 0),
                    (sc.stride, "u32", layer.stride, 1),
                    (sc.padding, "u8", _PADDING.index(layer.padding), 0),
                    (sc.pooling, "u8", _POOLING.index(layer.pooling), 0),
                    (sc.pool_size, "u32", layer.pool_size, 0),
                    (sc.pool_stride, "u32", layer.pool_stride, 0),
                    (sc.activation, "offset", activation, 0),
                ],
            )
            kind = _BODY_CONV
        else:
            sd = _Slots.DenseLayer
            weights = self.weights(layer)
            threshold = self.numbers(layer.threshold, "i4")
            activation = self.activation(layer.activation)
            body = self.table(
                "DenseLayer",
                [
                    (sd.weights, "offset", weights, 0),
                    (sd.threshold, "offset", threshold, 0),
                    (sd.activation, "offset", activation, 0),
                ],
            )
            kind = _BODY_DENSE
        s = _Slots.Layer
        name = self.string(layer.name)
        return self.table(
            "Layer",
            [
                (s.name, "offset", name, 0),
                (s.body_type, "u8", kind, 0),
                (s.body, "offset", body, 0),
            ],
        )

    def provenance(self, provenance: Provenance) -> int:
        s = _Slots.Provenance
        fidelity = None
        if provenance.fidelity is not None:
            fidelity = self.string(json.dumps(provenance.fidelity, sort_keys=True))
        return self.table(
            "Provenance",
            [
                (s.source_sha256, "offset", self.string(provenance.source_sha256), 0),
                (s.converter_version, "offset", self.string(provenance.converter_version), 0),
                (s.created, "offset", self.string(provenance.created), 0),
                (s.fidelity_json, "offset", fidelity, 0),
            ],
        )

    def hardware(self, hardware: HardwareParts | None) -> int | None:
        if hardware is None:
            return None
        s = _Slots.HardwareParts
        device = self.string(hardware.device)
        info = self.bytes(hardware.program_info)
        data = self.bytes(hardware.program_data)
        return self.table(
            "HardwareParts",
            [
                (s.device, "offset", device, 0),
                (s.program_info, "offset", info, 0),
                (s.program_data, "offset", data, 0),
                (s.np_count, "u32", hardware.np_count, 0),
            ],
        )

    def input_spec(self, spec: InputSpec | None) -> int | None:
        if spec is None:
            return None
        s = _Slots.InputSpec
        width, height, polarities = spec.sensor_size
        crop = spec.crop or CropBox(0, 0, 0, 0)
        assert spec.window_start is not None and spec.polarity is not None
        return self.table(
            "InputSpec",
            [
                (s.sensor_width, "u32", width, 0),
                (s.sensor_height, "u32", height, 0),
                (s.sensor_polarities, "u8", polarities, 0),
                (s.binning, "u8", _BINNING.index(spec.binning), 0),
                (s.amount, "u64", spec.amount, 0),
                (s.overlap, "f64", float(spec.overlap), 0.0),
                (s.include_incomplete, "bool", spec.include_incomplete, False),
                (s.window_start, "u8", _WINDOW_START.index(spec.window_start), 0),
                (s.start_time, "i64", spec.start_time or 0, 0),
                (s.end_time, "i64", spec.end_time or 0, 0),
                (s.has_end_time, "bool", spec.end_time is not None, False),
                (s.crop_x, "u32", crop.x, 0),
                (s.crop_y, "u32", crop.y, 0),
                (s.crop_width, "u32", crop.width, 0),
                (s.crop_height, "u32", crop.height, 0),
                (s.downsample_x, "u32", spec.downsample[0], 1),
                (s.downsample_y, "u32", spec.downsample[1], 1),
                (s.polarity, "u8", _POLARITY.index(spec.polarity), 0),
                (s.clip_bits, "u8", spec.clip_bits or 0, 0),
                (s.denoise_filter_time, "i64", _or_minus_one(spec.denoise_filter_time), -1),
                (s.refractory_delta, "i64", _or_minus_one(spec.refractory_delta), -1),
                (s.decision, "u8", _DECISION.index(spec.decision), 0),
                (s.rolling_frames, "u32", spec.rolling_frames, 0),
                (s.allow_stream_override, "bool", spec.allow_stream_override, False),
            ],
        )


def _or_minus_one(value: int | None) -> int:
    return -1 if value is None else value


def encode(program: Program, *, max_engine_bytes: int | None = None) -> bytes:
    """The program as FlatBuffers bytes; raises ProgramFormatError if it is inconsistent."""
    validate(program, max_engine_bytes=max_engine_bytes)
    w = _Writer()
    layers = w.offsets([w.layer(layer) for layer in program.layers])
    labels = w.offsets([w.string(label) for label in program.labels])
    scales = None
    if program.output_scales is not None:
        scales = w.numbers(program.output_scales, "f4")
    provenance = w.provenance(program.provenance)
    hardware = w.hardware(program.hardware)
    fbz = None if program.fbz is None else w.bytes(program.fbz)
    input_spec = w.input_spec(program.input_spec)
    name = w.string(program.name)
    s = _Slots.Program
    root = w.table(
        "Program",
        [
            (s.format_version, "u16", FORMAT_VERSION, 0),
            (s.name, "offset", name, 0),
            (s.layers, "offset", layers, 0),
            (s.labels, "offset", labels, 0),
            (s.output_scales, "offset", scales, 0),
            (s.provenance, "offset", provenance, 0),
            (s.hardware, "offset", hardware, 0),
            (s.fbz, "offset", fbz, 0),
            (s.input_spec, "offset", input_spec, 0),
        ],
    )
    w.b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(w.b.Output())


# ---------------------------------------------------------------- decoding


def _required(value: Any, what: str) -> Any:
    if value is None:
        raise ProgramFormatError(f"{what} is missing (truncated or corrupt program)")
    return value


def _enum(table: Table, slot: int, members: list[Any], name: str) -> Any:
    index = table.scalar(slot, "B", 0, name)
    if index >= len(members):
        raise ProgramFormatError(f"{table.what}.{name}: unknown value {index}")
    return members[index]


def _read_weights(table: Table, what: str) -> tuple[np.ndarray, int]:
    s = _Slots.PackedWeights
    bits = table.scalar(s.bits, "B", 0, "bits")
    if bits not in packing.WEIGHT_BITS:
        raise ProgramFormatError(
            f"{what}: weights_bits must be one of {packing.WEIGHT_BITS}, got {bits}"
        )
    shape = tuple(int(n) for n in _required(table.array(s.shape, "u4", "shape"), f"{what} shape"))
    data = _required(table.bytes(s.data, "data"), f"{what} data")
    return packing.unpack(data, bits, shape, what), bits


def _read_activation(table: Table | None) -> Activation | None:
    if table is None:
        return None
    s = _Slots.Activation
    step = _required(table.array(s.step, "f4", "step"), f"{table.what}.step")
    return Activation(bits=table.scalar(s.bits, "B", 0, "bits"), step=step)


def _read_layer(table: Table, index: int) -> Layer:
    s = _Slots.Layer
    name = _required(table.string(s.name, "name"), f"layer {index} name")
    what = f"layer {index} ({name!r})"
    kind = table.scalar(s.body_type, "B", 0, "body_type")
    body = _required(table.table(s.body, "body"), f"{what} body")
    if kind == _BODY_INPUT:
        si = _Slots.InputLayer
        shape = (
            body.scalar(si.height, "I", 0, "height"),
            body.scalar(si.width, "I", 0, "width"),
            body.scalar(si.channels, "I", 0, "channels"),
        )
        return InputData(name=name, shape=shape, bits=body.scalar(si.bits, "B", 0, "bits"))
    if kind == _BODY_CONV:
        sc = _Slots.ConvLayer
        weights, bits = _read_weights(_required(body.table(sc.weights, "weights"), what), what)
        if weights.ndim != 4:
            raise ProgramFormatError(f"{what}: convolution weights must have 4 dimensions")
        return Convolutional(
            name=name,
            weights=weights,
            threshold=_required(body.array(sc.threshold, "i4", "threshold"), f"{what} threshold"),
            weights_bits=bits,
            stride=body.scalar(sc.stride, "I", 1, "stride"),
            padding=_enum(body, sc.padding, _PADDING, "padding"),
            pooling=_enum(body, sc.pooling, _POOLING, "pooling"),
            pool_size=body.scalar(sc.pool_size, "I", 0, "pool_size"),
            pool_stride=body.scalar(sc.pool_stride, "I", 0, "pool_stride"),
            activation=_read_activation(body.table(sc.activation, "activation")),
        )
    if kind == _BODY_DENSE:
        sd = _Slots.DenseLayer
        weights, bits = _read_weights(_required(body.table(sd.weights, "weights"), what), what)
        if weights.ndim != 2:
            raise ProgramFormatError(f"{what}: fully connected weights must have 2 dimensions")
        return FullyConnected(
            name=name,
            weights=weights,
            threshold=_required(body.array(sd.threshold, "i4", "threshold"), f"{what} threshold"),
            weights_bits=bits,
            activation=_read_activation(body.table(sd.activation, "activation")),
        )
    raise ProgramFormatError(f"{what}: unknown layer kind {kind}")


def _read_provenance(table: Table | None) -> Provenance:
    if table is None:
        return Provenance()
    s = _Slots.Provenance
    fidelity_json = table.string(s.fidelity_json, "fidelity_json")
    fidelity = None
    if fidelity_json is not None:
        try:
            fidelity = json.loads(fidelity_json)
        except (ValueError, RecursionError) as exc:
            raise ProgramFormatError(f"provenance fidelity is not valid JSON: {exc}") from None
    return Provenance(
        source_sha256=table.string(s.source_sha256, "source_sha256") or "",
        converter_version=table.string(s.converter_version, "converter_version") or "",
        created=table.string(s.created, "created") or "",
        fidelity=fidelity,
    )


def _read_hardware(table: Table | None) -> HardwareParts | None:
    if table is None:
        return None
    s = _Slots.HardwareParts
    return HardwareParts(
        device=table.string(s.device, "device") or "",
        program_info=table.bytes(s.program_info, "program_info") or b"",
        program_data=table.bytes(s.program_data, "program_data") or b"",
        np_count=table.scalar(s.np_count, "I", 0, "np_count"),
    )


def _read_input_spec(table: Table | None) -> InputSpec | None:
    if table is None:
        return None
    s = _Slots.InputSpec
    binning = _enum(table, s.binning, _BINNING, "binning")
    window_start = _enum(table, s.window_start, _WINDOW_START, "window_start")
    crop = None
    crop_width = table.scalar(s.crop_width, "I", 0, "crop_width")
    if crop_width:
        crop = CropBox(
            table.scalar(s.crop_x, "I", 0, "crop_x"),
            table.scalar(s.crop_y, "I", 0, "crop_y"),
            crop_width,
            table.scalar(s.crop_height, "I", 0, "crop_height"),
        )
    denoise = table.scalar(s.denoise_filter_time, "q", -1, "denoise_filter_time")
    refractory = table.scalar(s.refractory_delta, "q", -1, "refractory_delta")
    clip_bits = table.scalar(s.clip_bits, "B", 0, "clip_bits")
    has_end = table.scalar(s.has_end_time, "B", 0, "has_end_time")
    overlap = table.double(s.overlap, 0.0, "overlap")
    try:
        return InputSpec(
            sensor_size=(
                table.scalar(s.sensor_width, "I", 0, "sensor_width"),
                table.scalar(s.sensor_height, "I", 0, "sensor_height"),
                table.scalar(s.sensor_polarities, "B", 0, "sensor_polarities"),
            ),
            **{binning.value: table.scalar(s.amount, "Q", 0, "amount")},
            overlap=int(overlap) if float(overlap).is_integer() else overlap,
            include_incomplete=bool(table.scalar(s.include_incomplete, "B", 0, "include")),
            start_time=(
                table.scalar(s.start_time, "q", 0, "start_time")
                if window_start is WindowStart.START_TIME
                else None
            ),
            end_time=table.scalar(s.end_time, "q", 0, "end_time") if has_end else None,
            window_start=window_start,
            crop=crop,
            downsample=(
                table.scalar(s.downsample_x, "I", 1, "downsample_x"),
                table.scalar(s.downsample_y, "I", 1, "downsample_y"),
            ),
            polarity=_enum(table, s.polarity, _POLARITY, "polarity"),
            clip_bits=clip_bits or None,
            denoise_filter_time=None if denoise < 0 else denoise,
            refractory_delta=None if refractory < 0 else refractory,
            decision=_enum(table, s.decision, _DECISION, "decision"),
            rolling_frames=table.scalar(s.rolling_frames, "I", 0, "rolling_frames"),
            allow_stream_override=bool(
                table.scalar(s.allow_stream_override, "B", 0, "allow_stream_override")
            ),
        )
    except InputSpecError as exc:
        raise ProgramFormatError(f"program input spec is invalid: {exc}") from None


def decode(data: bytes, *, max_engine_bytes: int | None = None) -> Program:
    """Parse and validate program bytes; anything wrong raises ProgramFormatError.
    ``max_engine_bytes``: the engine memory cap (see ``validate``)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProgramFormatError(f"program data must be bytes, got {type(data).__name__}")
    root = Buffer(bytes(data)).root(FILE_IDENTIFIER, "program")
    s = _Slots.Program
    version = root.scalar(s.format_version, "H", 0, "format_version")
    if version != FORMAT_VERSION:
        raise ProgramFormatError(
            f"unsupported program format version {version}; this spikefleet reads version "
            f"{FORMAT_VERSION} (upgrade spikefleet, or re-convert the program)"
        )
    layer_tables = _required(root.tables(s.layers, "layers"), "program layers")
    program = Program(
        name=root.string(s.name, "name") or "",
        layers=[_read_layer(table, i) for i, table in enumerate(layer_tables)],
        labels=root.strings(s.labels, "labels") or [],
        output_scales=root.array(s.output_scales, "f4", "output_scales"),
        provenance=_read_provenance(root.table(s.provenance, "provenance")),
        hardware=_read_hardware(root.table(s.hardware, "hardware")),
        fbz=root.bytes(s.fbz, "fbz"),
        input_spec=_read_input_spec(root.table(s.input_spec, "input_spec")),
    )
    validate(program, max_engine_bytes=max_engine_bytes)
    return program
