"""``decode`` on hostile bytes: only ProgramFormatError escapes, memory stays bounded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.program_factory import reference_program

from spikefleet.errors import ProgramFormatError
from spikefleet.program import Activation, Convolutional, FullyConnected, InputData, Program
from spikefleet.program.codec import (
    FILE_IDENTIFIER,
    FORMAT_VERSION,
    _Slots,
    _Writer,
    decode,
    encode,
)

VALID = encode(reference_program())
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_refuse(data: bytes) -> None:
    """Decoding either refuses with ProgramFormatError or yields a program that re-encodes."""
    try:
        program = decode(data)
    except ProgramFormatError as exc:
        assert str(exc)
        return
    assert decode(encode(program)) is not None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    decode_or_refuse(data)


@FUZZ
@given(st.binary(min_size=4, max_size=2048))
def test_random_bytes_behind_a_valid_identifier(data: bytes) -> None:
    decode_or_refuse(data[:4] + FILE_IDENTIFIER + data[4:])


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_byte_mutations_of_a_valid_program(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for at, value in edits:
        data[at] = value
    decode_or_refuse(bytes(data))


@FUZZ
@given(
    st.integers(0, len(VALID) // 4 - 1),
    st.sampled_from([0, 1, 0x7F, 0x80, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]),
)
def test_word_overwrites_of_a_valid_program(word: int, value: int) -> None:
    """Offsets, lengths and vtable entries replaced with extreme values."""
    data = bytearray(VALID)
    data[4 * word : 4 * word + 4] = value.to_bytes(4, "little")
    decode_or_refuse(bytes(data))


@FUZZ
@given(st.integers(0, len(VALID)), st.integers(0, len(VALID)), st.binary(max_size=16))
def test_truncations_and_splices_of_a_valid_program(cut: int, resume: int, insert: bytes) -> None:
    decode_or_refuse(VALID[:cut])
    decode_or_refuse(VALID[:cut] + insert + VALID[resume:])


def test_every_truncation_is_refused() -> None:
    for cut in range(0, len(VALID), 7):
        with pytest.raises(ProgramFormatError):
            decode(VALID[:cut])


def test_shared_tables_cannot_amplify_memory() -> None:
    """A small buffer whose layers all point at one big weights table is refused
    before it unpacks the weights thousands of times."""
    rng = np.random.default_rng(0)
    dense = FullyConnected(
        "fc", rng.integers(0, 2, (8192, 64)).astype(np.int8), np.zeros(64, np.int32), weights_bits=1
    )
    writer = _Writer()
    shared = writer.layer(dense)
    layers = writer.offsets([writer.layer(InputData("in", (1, 1, 8192), 1))] + [shared] * 5000)
    s = _Slots.Program
    root = writer.table(
        "Program", [(s.format_version, "u16", FORMAT_VERSION, 0), (s.layers, "offset", layers, 0)]
    )
    writer.b.Finish(root, file_identifier=FILE_IDENTIFIER)
    data = bytes(writer.b.Output())
    assert len(data) < 200_000  # 5,000 layers of 512 KiB weights each, if they were expanded
    with pytest.raises(ProgramFormatError, match="expand to more data than it holds"):
        decode(data)


def test_layers_sharing_one_table_are_refused_early() -> None:
    """Every entry of a huge layers vector points at the same small layer: the reader
    stops after a bounded number of tables instead of decoding them all."""
    conv = Convolutional(
        "c",
        np.zeros((1, 1, 2, 1), np.int8),
        np.zeros(1, np.int32),
        activation=Activation(1, np.ones(1, np.float32)),
    )
    writer = _Writer()
    shared = writer.layer(conv)
    layers = writer.offsets([writer.layer(InputData("in", (4, 4, 2), 4))] + [shared] * 50_000)
    s = _Slots.Program
    root = writer.table(
        "Program", [(s.format_version, "u16", FORMAT_VERSION, 0), (s.layers, "offset", layers, 0)]
    )
    writer.b.Finish(root, file_identifier=FILE_IDENTIFIER)
    data = bytes(writer.b.Output())
    with pytest.raises(
        ProgramFormatError, match=r"layers\[\d+\]: the buffer's offsets expand"
    ) as caught:
        decode(data)
    refused_at = int(str(caught.value).split("[")[1].split("]")[0])
    assert refused_at < 10_000


def test_a_valid_program_survives_the_harness() -> None:
    program = decode(VALID)
    assert isinstance(program, Program) and len(program.layers) == 4
