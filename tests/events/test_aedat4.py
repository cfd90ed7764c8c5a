"""AEDAT4: files spikefleet writes are read back by the aedat decoder, tonic and spikefleet.

These files come from spikefleet's own writer (flatbuffers, as the AEDAT4
spec lays out); no recording from a real DV camera is available offline.
"""

from __future__ import annotations

import aedat
import numpy as np
import pytest
from tonic.io import read_aedat4 as tonic_read_aedat4

from spikefleet.errors import EventFormatError
from spikefleet.events import make_events, read_aedat4, write_aedat4


def recording(n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(4)
    return make_events(
        rng.integers(0, 346, n),
        rng.integers(0, 260, n),
        np.sort(rng.integers(10**9, 10**9 + 5 * 10**6, n)),
        rng.random(n) < 0.5,
    )


def test_round_trip_through_the_aedat_decoder_and_tonic(tmp_path):
    events = recording()
    path = tmp_path / "rec.aedat4"
    write_aedat4(path, events, 346, 260)
    streams = aedat.Decoder(str(path)).id_to_stream()
    assert streams == {0: {"type": "events", "width": 346, "height": 260}}
    np.testing.assert_array_equal(read_aedat4(path), events)
    theirs = tonic_read_aedat4(str(path))
    for ours_name, their_name in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
        np.testing.assert_array_equal(theirs[their_name], events[ours_name])


def test_an_empty_recording(tmp_path):
    path = tmp_path / "empty.aedat4"
    write_aedat4(path, make_events([], [], [], []), 34, 34)
    assert len(read_aedat4(path)) == 0


def test_bad_files_and_streams_are_named(tmp_path):
    with pytest.raises(EventFormatError, match="no AEDAT4 file"):
        read_aedat4(tmp_path / "absent.aedat4")
    (tmp_path / "junk.aedat4").write_bytes(b"#!AER-DAT2.0\r\nnot at all")
    with pytest.raises(EventFormatError, match="not a readable AEDAT4"):
        read_aedat4(tmp_path / "junk.aedat4")
    path = tmp_path / "rec.aedat4"
    write_aedat4(path, recording(10), 346, 260)
    with pytest.raises(EventFormatError, match="not an event stream"):
        read_aedat4(path, stream_id=3)
    with pytest.raises(EventFormatError, match="outside"):
        write_aedat4(path, recording(10), 34, 34)
