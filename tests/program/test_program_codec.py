"""The program codec: exact round trips, and clear errors for what it cannot carry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from support.program_factory import architectures, assert_programs_equal, reference_program

from spikefleet.errors import ProgramFormatError
from spikefleet.program import Activation, Convolutional, FullyConnected, Program, Provenance
from spikefleet.program.codec import FILE_IDENTIFIER, _Slots, _Writer, decode, encode


def test_reference_program_round_trips_exactly() -> None:
    program = reference_program()
    data = encode(program)
    assert data[4:8] == FILE_IDENTIFIER
    assert_programs_equal(decode(data), program)


def test_encoding_is_deterministic() -> None:
    assert encode(reference_program(3)) == encode(reference_program(3))


def test_weights_are_packed_at_their_bit_width() -> None:
    program = reference_program()
    size_4bit = len(encode(program))
    conv2 = program.layers[2]
    assert isinstance(conv2, Convolutional)
    conv2.weights = np.clip(conv2.weights, 0, 1).astype(np.int8)
    conv2.weights_bits = 1
    size_1bit = len(encode(program))
    # conv2 holds 18,432 weights: 9,216 bytes at 4 bits, 2,304 at 1 bit.
    assert size_4bit - size_1bit == 9216 - 2304
    assert np.array_equal(decode(encode(program)).layers[2].weights, conv2.weights)


def test_optional_parts_stay_absent() -> None:
    program = reference_program()
    program.output_scales = None
    program.hardware = None
    program.fbz = None
    program.provenance = Provenance()
    program.labels = []
    assert_programs_equal(decode(encode(program)), program)


def test_empty_optional_bytes_differ_from_absent() -> None:
    program = reference_program()
    program.fbz = b""
    assert decode(encode(program)).fbz == b""


@settings(max_examples=60, deadline=None)
@given(architectures())
def test_generated_programs_round_trip_exactly(program: Program) -> None:
    assert_programs_equal(decode(encode(program)), program)


@pytest.mark.parametrize(
    ("bits", "value"),
    [(4, -8), (4, 8), (2, -2), (2, 2), (1, -1), (1, 2)],
)
def test_encode_refuses_weights_akida_rejects(bits: int, value: int) -> None:
    program = reference_program()
    fc = program.layers[3]
    assert isinstance(fc, FullyConnected)
    fc.weights = np.zeros_like(fc.weights)
    fc.weights[5, 2] = value
    fc.weights_bits = bits
    with pytest.raises(ProgramFormatError, match=f"weight value {value} is outside"):
        encode(program)


def test_encode_names_a_wrong_dtype() -> None:
    program = reference_program()
    fc = program.layers[3]
    assert isinstance(fc, FullyConnected)
    fc.threshold = fc.threshold.astype(np.int64)
    with pytest.raises(ProgramFormatError, match=r"'fc'.*threshold must be int32, got int64"):
        encode(program)


def test_encode_names_a_broken_channel_chain() -> None:
    program = reference_program()
    conv2 = program.layers[2]
    assert isinstance(conv2, Convolutional)
    conv2.weights = conv2.weights[:, :, :16, :]
    with pytest.raises(
        ProgramFormatError, match="expect 16 input channels but the previous layer gives 32"
    ):
        encode(program)


def test_encode_names_wrong_fully_connected_rows() -> None:
    program = reference_program()
    fc = program.layers[3]
    assert isinstance(fc, FullyConnected)
    fc.weights = fc.weights[:60]
    with pytest.raises(
        ProgramFormatError, match="60 rows but the previous layer gives 1x1x64 = 64"
    ):
        encode(program)


def test_encode_names_a_wrong_step_length() -> None:
    program = reference_program()
    conv1 = program.layers[1]
    assert isinstance(conv1, Convolutional)
    conv1.activation = Activation(bits=1, step=np.ones(31, np.float32))
    with pytest.raises(
        ProgramFormatError, match=r"activation step has shape \(31,\), expected \(32,\)"
    ):
        encode(program)


def test_encode_refuses_activation_bits_akida_lacks() -> None:
    program = reference_program()
    conv1 = program.layers[1]
    assert isinstance(conv1, Convolutional)
    assert conv1.activation is not None
    conv1.activation.bits = 3
    with pytest.raises(ProgramFormatError, match="activation bits must be one of"):
        encode(program)


def test_encode_refuses_an_activation_step_below_akidas_minimum() -> None:
    program = reference_program()
    conv1 = program.layers[1]
    assert isinstance(conv1, Convolutional)
    assert conv1.activation is not None
    conv1.activation.step[3] = 0.03
    with pytest.raises(ProgramFormatError, match=r"at least 0\.0625"):
        encode(program)


def test_encode_refuses_a_layer_fed_by_potentials() -> None:
    program = reference_program()
    conv2 = program.layers[2]
    assert isinstance(conv2, Convolutional)
    conv2.activation = None
    with pytest.raises(ProgramFormatError, match="'conv2', which has no activation"):
        encode(program)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: setattr(p.layers[1], "stride", 2.0), "stride must be an int"),
        (lambda p: setattr(p.layers[0], "shape", (34, 0, 2)), "input W must be between 1"),
        (lambda p: setattr(p, "name", None), "name must be a str"),
        (lambda p: setattr(p.hardware, "np_count", -1), "np_count must be between 0"),
        (lambda p: setattr(p.provenance, "fidelity", {"x": object()}), "not JSON data"),
    ],
)
def test_encode_names_wrongly_typed_fields(change, message: str) -> None:
    program = reference_program()
    change(program)
    with pytest.raises(ProgramFormatError, match=message):
        encode(program)


def test_encode_refuses_label_count_mismatch() -> None:
    program = reference_program()
    program.labels = ["a", "b"]
    with pytest.raises(ProgramFormatError, match="2 labels but its last layer gives 10 outputs"):
        encode(program)


def test_decode_refuses_other_formats() -> None:
    with pytest.raises(ProgramFormatError, match="file identifier"):
        decode(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ProgramFormatError, match="too short"):
        decode(b"SFPG")


def test_decode_refuses_an_unsupported_version() -> None:
    writer = _Writer()
    layers = writer.offsets([writer.layer(layer) for layer in reference_program().layers])
    s = _Slots.Program
    root = writer.table(
        "Program", [(s.format_version, "u16", 7, 0), (s.layers, "offset", layers, 0)]
    )
    writer.b.Finish(root, file_identifier=FILE_IDENTIFIER)
    with pytest.raises(ProgramFormatError, match="unsupported program format version 7"):
        decode(bytes(writer.b.Output()))


def test_decode_reports_out_of_range_packed_weights() -> None:
    program = reference_program()
    fc = program.layers[3]
    assert isinstance(fc, FullyConnected)
    fc.weights = np.full_like(fc.weights, 7)
    data = encode(program)
    packed = bytes([0x77]) * 320
    at = data.index(packed)
    corrupt = data[:at] + bytes([0x78]) + data[at + 1 :]  # low nibble 8 is -8
    with pytest.raises(ProgramFormatError, match="weight value -8 is outside"):
        decode(corrupt)


def test_decode_reports_truncation() -> None:
    data = encode(reference_program())
    with pytest.raises(ProgramFormatError, match="outside the"):
        decode(data[: len(data) // 2])
