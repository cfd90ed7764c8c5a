"""Weights packing: the bit layout the schema documents, and akida's value ranges."""

from __future__ import annotations

import numpy as np
import pytest

from spikefleet.errors import ProgramFormatError
from spikefleet.program.packing import pack, unpack, weight_range


def test_ranges_are_the_ones_akida_accepts() -> None:
    assert weight_range(1) == (0, 1)
    assert weight_range(2) == (-1, 1)
    assert weight_range(4) == (-7, 7)
    with pytest.raises(ProgramFormatError, match="weights_bits must be one of"):
        weight_range(8)


def test_layout_fills_bytes_from_the_least_significant_bit() -> None:
    assert pack(np.array([1, -1, 7, -7, 3], np.int8), 4) == bytes([0xF1, 0x97, 0x03])
    assert pack(np.array([1, -1, 0, 1, -1], np.int8), 2) == bytes([0b01_00_11_01, 0b11])
    assert pack(np.array([1, 0, 0, 0, 0, 0, 0, 1, 1], np.int8), 1) == bytes([0x81, 0x01])


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_every_value_round_trips(bits: int) -> None:
    low, high = weight_range(bits)
    values = np.tile(np.arange(low, high + 1, dtype=np.int8), 7)[:-1].reshape(-1)
    assert np.array_equal(unpack(pack(values, bits), bits, values.shape, "w"), values)


def test_unpack_refuses_wrong_lengths_and_dirty_padding() -> None:
    with pytest.raises(ProgramFormatError, match="needs 2"):
        unpack(b"\x00", 4, (3,), "w")
    with pytest.raises(ProgramFormatError, match="padding bits"):
        unpack(b"\x11\x10", 4, (3,), "w")
