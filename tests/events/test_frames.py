"""to_frames: ON/OFF event counts per pixel, clipped to the input bit width."""

from __future__ import annotations

import numpy as np
import pytest
from tonic.functional import to_frame_numpy

from spikefleet.errors import EventFormatError
from spikefleet.events import make_events, to_frames


def test_whole_recording_is_one_frame_with_on_and_off_channels():
    events = make_events([0, 0, 5, 5, 5], [1, 1, 2, 2, 2], [0, 1, 2, 3, 4], [1, 1, 0, 0, 1])
    frames = to_frames(events, (34, 34, 2))
    assert frames.shape == (1, 34, 34, 2) and frames.dtype == np.uint8
    assert frames[0, 1, 0, 1] == 2  # (y=1, x=0) ON twice
    assert frames[0, 2, 5, 0] == 2 and frames[0, 2, 5, 1] == 1
    assert frames.sum() == 5


def test_counts_saturate_at_the_bit_width():
    events = make_events([3] * 40, [4] * 40, range(40), [True] * 40)
    assert to_frames(events, bits=4)[0, 4, 3, 1] == 15
    assert to_frames(events, bits=1)[0, 4, 3, 1] == 1
    assert to_frames(events, bits=8)[0, 4, 3, 1] == 40


def test_single_channel_merges_polarities():
    events = make_events([1, 1], [1, 1], [0, 1], [True, False])
    frames = to_frames(events, (4, 4, 1))
    assert frames.shape == (1, 4, 4, 1) and frames[0, 1, 1, 0] == 2


def test_time_windows_match_tonic():
    rng = np.random.default_rng(3)
    n = 4000
    events = make_events(
        rng.integers(0, 34, n),
        rng.integers(0, 30, n),
        np.sort(rng.integers(0, 100_000, n)),
        rng.random(n) < 0.5,
    )
    ours = to_frames(events, (34, 30, 2), time_window_us=10_000, bits=8, include_incomplete=True)
    theirs = to_frame_numpy(events.copy(), (34, 30, 2), time_window=10_000, include_incomplete=True)
    # tonic gives (T, P, H, W) counts; ours are (T, H, W, C) saturated at 255 (never reached here).
    assert ours.shape[0] == theirs.shape[0]
    np.testing.assert_array_equal(ours, theirs.transpose(0, 2, 3, 1))


def test_event_count_slices_events_in_order_dropping_the_incomplete_group():
    events = make_events([0, 1, 2, 3, 4], [0] * 5, [10, 20, 30, 40, 50], [True] * 5)
    frames = to_frames(events, (5, 1, 2), event_count=2)
    assert frames.shape == (2, 1, 5, 2)
    assert frames[0, 0, :, 1].tolist() == [1, 1, 0, 0, 0]
    assert frames[1, 0, :, 1].tolist() == [0, 0, 1, 1, 0]
    assert to_frames(events, (5, 1, 2), event_count=2, include_incomplete=True).shape[0] == 3


def test_empty_recordings():
    empty = make_events([], [], [], [])
    assert to_frames(empty).shape == (1, 34, 34, 2) and not to_frames(empty).any()
    # as tonic's ToFrame: one empty frame of no events
    assert to_frames(empty, time_window_us=1000).shape == (1, 34, 34, 2)
    assert to_frames(empty, event_count=10).shape == (1, 34, 34, 2)


def test_bad_input_is_named():
    events = make_events([40], [1], [0], [True])
    with pytest.raises(EventFormatError, match="outside the spec's 34x34 sensor"):
        to_frames(events)
    ok = make_events([1], [1], [0], [True])
    with pytest.raises(EventFormatError, match="not both"):
        to_frames(ok, time_window_us=10, event_count=10)
    with pytest.raises(EventFormatError, match="bits"):
        to_frames(ok, bits=9)
    with pytest.raises(EventFormatError, match="polarities"):
        to_frames(ok, (34, 34, 3))
    with pytest.raises(EventFormatError, match="structured"):
        to_frames(np.zeros((3, 4)))
