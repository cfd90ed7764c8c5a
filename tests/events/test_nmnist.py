"""N-MNIST files written by spikefleet read back identically, through spikefleet and tonic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tonic.io import events_struct, read_mnist_file

from spikefleet.errors import EventFormatError
from spikefleet.events import EVENT_DTYPE, make_events, read_nmnist, write_nmnist
from spikefleet.events.nmnist import OVERFLOW_Y, decode_nmnist, encode_nmnist


def random_events(rng: np.random.Generator, n: int, t_max: int) -> np.ndarray:
    y = rng.integers(0, 255, n)
    y[y == OVERFLOW_Y] = 0
    return make_events(
        rng.integers(0, 256, n), y, np.sort(rng.integers(0, t_max, n)), rng.random(n) < 0.5
    )


def test_dtype_is_tonics():
    assert events_struct == EVENT_DTYPE


def test_round_trip_through_tonic_reader(tmp_path):
    events = random_events(np.random.default_rng(1), 3000, 300_000)
    path = tmp_path / "sample.bin"
    write_nmnist(path, events)
    assert path.stat().st_size == 5 * len(events)
    np.testing.assert_array_equal(read_mnist_file(str(path), dtype=events_struct), events)
    np.testing.assert_array_equal(read_nmnist(path), events)


def test_long_recordings_use_overflow_markers_tonic_understands(tmp_path):
    events = random_events(np.random.default_rng(2), 2000, 5 * 2**23)
    path = tmp_path / "long.bin"
    write_nmnist(path, events)
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5)
    assert (raw[:, 1] == OVERFLOW_Y).sum() > 0
    np.testing.assert_array_equal(read_mnist_file(str(path), dtype=events_struct), events)
    np.testing.assert_array_equal(read_nmnist(path), events)


def test_decodes_bit_layout_of_a_hand_made_record():
    # x=3, y=7, ON, t=0x012345 then an overflow marker, then x=1, y=2, OFF, t=5
    data = bytes([3, 7, 0x80 | 0x01, 0x23, 0x45, 0, OVERFLOW_Y, 0, 0, 0, 1, 2, 0, 0, 5])
    events = decode_nmnist(data)
    assert events.tolist() == [(3, 7, 0x012345, True), (1, 2, 5 + 2**13, False)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 400), st.integers(1, 2**26))
def test_encode_decode_round_trip(seed, n, t_max):
    events = random_events(np.random.default_rng(seed), n, t_max)
    np.testing.assert_array_equal(decode_nmnist(encode_nmnist(events)), events)


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(b"\x01\x02\x03\x04\x05\x06")
    with pytest.raises(EventFormatError, match="truncated"):
        read_nmnist(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(EventFormatError, match="no N-MNIST file"):
        read_nmnist(tmp_path / "absent.bin")


def test_refuses_what_the_format_cannot_hold():
    with pytest.raises(EventFormatError, match=r"0\.\.255"):
        encode_nmnist(make_events([300], [1], [0], [True]))
    with pytest.raises(EventFormatError, match="y=240"):
        encode_nmnist(make_events([1], [240], [0], [True]))
    with pytest.raises(EventFormatError, match=">= 0"):
        encode_nmnist(make_events([1], [1], [-1], [True]))
    with pytest.raises(EventFormatError, match="sort"):
        encode_nmnist(make_events([1, 1], [1, 1], [2**24, 5], [True, True]))


def test_accepts_tonic_style_int_fields():
    plain = np.zeros(2, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    plain["x"], plain["t"], plain["p"] = [1, 2], [10, 20], [0, 1]
    decoded = decode_nmnist(encode_nmnist(plain))
    assert decoded.tolist() == [(1, 0, 10, False), (2, 0, 20, True)]
