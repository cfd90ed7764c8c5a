"""FrameAccumulator: live packets become the same frames as the whole recording would."""

from __future__ import annotations

import numpy as np
import pytest

from spikefleet.errors import EventFormatError
from spikefleet.events import (
    DROP_LATE,
    DROP_OUT_OF_BOUNDS,
    FrameAccumulator,
    make_events,
    to_frames,
)


def recording(seed: int = 0, n: int = 3000, duration: int = 95_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration, n))
    t[0] = 0
    return make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), t, rng.random(n) < 0.5)


def collect(acc: FrameAccumulator, packets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    emitted = [acc.push(p) for p in packets] + [acc.flush()]
    return (
        np.concatenate([e.frames for e in emitted]),
        np.concatenate([e.window_start_us for e in emitted]),
    )


def test_in_order_packets_give_the_frames_of_the_whole_recording():
    events = recording()
    acc = FrameAccumulator(time_window_us=10_000)
    frames, starts = collect(acc, np.array_split(events, 37))
    np.testing.assert_array_equal(frames, to_frames(events, time_window_us=10_000))
    assert starts.tolist() == list(range(0, 100_000, 10_000))
    assert acc.stats.dropped == {} and acc.stats.events_accepted == len(events)


def test_out_of_order_within_the_lateness_budget_is_kept():
    events = recording(1)
    rng = np.random.default_rng(5)
    packets = np.array_split(events, 60)
    shuffled = [np.concatenate(packets[i : i + 3]) for i in range(0, 60, 3)]
    for p in shuffled:
        rng.shuffle(p)
    acc = FrameAccumulator(time_window_us=10_000, lateness_us=20_000)
    frames, _ = collect(acc, shuffled)
    np.testing.assert_array_equal(frames, to_frames(events, time_window_us=10_000))
    assert acc.stats.dropped == {}


def test_late_events_are_dropped_and_reported():
    acc = FrameAccumulator((34, 34, 2), time_window_us=1000)
    first = acc.push(make_events([1, 2], [1, 1], [0, 2500], [True, True]))
    assert first.window_start_us.tolist() == [0]  # window 1 had no events
    # Windows 0 and 1 are closed: an event at t=1500 is late, one at 2600 is not.
    second = acc.push(make_events([3, 4], [1, 1], [1500, 2600], [True, True]))
    assert second.dropped == {DROP_LATE: 1} and len(second.frames) == 0
    assert acc.flush().frames[0, 1, :, 1].tolist()[:5] == [0, 0, 1, 0, 1]
    assert acc.stats.dropped == {DROP_LATE: 1} and acc.stats.frames_emitted == 2


def test_empty_packets_and_out_of_bounds_events():
    acc = FrameAccumulator((8, 8, 2), time_window_us=100)
    assert len(acc.push(make_events([], [], [], [])).frames) == 0
    out = acc.push(make_events([9, 1, -1], [1, 1, 1], [0, 0, 0], [True, False, True]))
    assert out.dropped == {DROP_OUT_OF_BOUNDS: 2}
    assert len(acc.push(make_events([], [], [], [])).frames) == 0
    frames = acc.flush().frames
    assert frames.shape == (1, 8, 8, 2) and frames.sum() == 1
    assert len(acc.flush().frames) == 0


def test_silent_windows_produce_no_frame():
    acc = FrameAccumulator((4, 4, 1), time_window_us=100)
    acc.push(make_events([0], [0], [0], [True]))
    out = acc.push(make_events([1], [1], [1050], [True]))
    assert out.window_start_us.tolist() == [0]
    assert acc.flush().window_start_us.tolist() == [1000]


def test_bad_settings_are_named():
    with pytest.raises(EventFormatError, match="time_window_us"):
        FrameAccumulator(time_window_us=0)
    with pytest.raises(EventFormatError, match="lateness_us"):
        FrameAccumulator(time_window_us=10, lateness_us=-1)
