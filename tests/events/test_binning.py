"""An InputSpec's frames equal tonic's, element for element, offline and live.

tonic itself is the reference (tests/support/events.py builds the pipeline a
user would write). Live binning, fed the same events in arbitrary packets,
makes exactly the offline frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import tonic.transforms as tt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.events import recording, to_nhwc, tonic_frames

from spikefleet.errors import EventFormatError
from spikefleet.events import (
    EVENT_DTYPE,
    InputSpec,
    Polarity,
    WindowStart,
    make_events,
)
from spikefleet.events.binning import BinningLimitError, SpecBinner, ToFrames, spec_frames
from spikefleet.events.spec import center_crop


@st.composite
def specs(draw: st.DrawFn, max_side: int = 48) -> InputSpec:
    width = draw(st.integers(1, max_side))
    height = draw(st.integers(1, max_side))
    polarities = draw(st.sampled_from([1, 2]))
    binning = draw(st.sampled_from(["time_window", "event_count", "n_time_bins", "n_event_bins"]))
    kwargs: dict[str, object] = {}
    if binning == "time_window":
        window = draw(st.integers(1, 30_000))
        kwargs.update(time_window=window, overlap=draw(st.integers(0, window - 1)) // 2)
        kwargs["include_incomplete"] = draw(st.booleans())
        if draw(st.booleans()):
            kwargs["start_time"] = draw(st.integers(0, 5_000))
        if draw(st.booleans()):
            kwargs["end_time"] = draw(st.integers(5_000, 120_000))
    elif binning == "event_count":
        count = draw(st.integers(1, 200))
        kwargs.update(event_count=count, overlap=draw(st.integers(0, count - 1)) // 2)
        kwargs["include_incomplete"] = draw(st.booleans())
    else:
        kwargs[binning] = draw(st.integers(1, 12))
        kwargs["overlap"] = draw(st.sampled_from([0, 0.25, 0.5]))
    if draw(st.booleans()):
        size = (draw(st.integers(1, width)), draw(st.integers(1, height)))
        kwargs["crop"] = center_crop((width, height, polarities), size)
    kwargs["downsample"] = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    if polarities == 2 and draw(st.booleans()):
        kwargs["polarity"] = Polarity.MERGED
    kwargs["clip_bits"] = draw(st.sampled_from([None, 1, 4, 8]))
    if draw(st.integers(0, 3)) == 0:
        kwargs["denoise_filter_time"] = draw(st.integers(1, 20_000))
    if draw(st.integers(0, 3)) == 0:
        kwargs["refractory_delta"] = draw(st.integers(0, 5_000))
    return InputSpec(sensor_size=(width, height, polarities), **kwargs)  # type: ignore[arg-type]


def make_recording(spec: InputSpec, seed: int, n: int, duration: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = recording(rng, spec.sensor_size[:2], n, duration)
    if spec.sensor_size[2] == 1:
        events["p"] = False
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    duration=st.integers(1, 150_000),
)
def test_frames_equal_tonics_element_for_element(
    spec: InputSpec, seed: int, n: int, duration: int
) -> None:
    events = make_recording(spec, seed, n, duration)
    if spec.denoise_filter_time is not None and not (events["x"].any() or events["y"].any()):
        return  # tonic sizes Denoise's pixel map from the recording: the documented difference
    expected = tonic_frames(spec, events)
    ours = ToFrames(spec)(events)
    assert ours.dtype == np.int16 and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    duration=st.integers(1, 150_000),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_live_packets_make_exactly_the_offline_frames(
    spec: InputSpec, seed: int, n: int, duration: int, cuts: list[int]
) -> None:
    events = make_recording(spec, seed, n, duration)
    binner = SpecBinner(spec)
    live = []
    for packet in np.split(events, sorted(c for c in cuts if c <= n)):
        live.append(binner.push(packet).frames)
    live.append(binner.flush().frames)
    np.testing.assert_array_equal(np.concatenate(live), spec_frames(events, spec))


def test_program_frames_are_tonics_in_nhwc_clipped_to_the_input_bits() -> None:
    spec = InputSpec(sensor_size=(34, 34, 2), time_window=10_000, clip_bits=4)
    events = make_recording(spec, 3, 20_000, 95_000)
    events["x"][::2], events["y"][::2] = 3, 4  # one busy pixel
    ours = spec_frames(events, spec)
    assert ours.dtype == np.uint8 and ours.shape == (9, 34, 34, 2) and ours.max() == 15
    np.testing.assert_array_equal(ours, to_nhwc(tonic_frames(spec, events)))


@pytest.mark.parametrize("binning", ["time_window", "event_count"])
def test_a_1280x720_sensor_with_crop_and_downsample(binning: str) -> None:
    amount = 10_000 if binning == "time_window" else 20_000
    spec = InputSpec(
        sensor_size=(1280, 720, 2),
        crop=center_crop((1280, 720, 2), (1200, 700)),
        downsample=(8, 7),
        clip_bits=4,
        **{binning: amount},  # type: ignore[arg-type]
    )
    events = make_recording(spec, 11, 200_000, 100_000)
    assert spec.input_shape == (100, 150, 2)
    np.testing.assert_array_equal(spec_frames(events, spec), to_nhwc(tonic_frames(spec, events)))


def test_empty_windows_are_kept_and_edges_belong_to_the_later_window() -> None:
    spec = InputSpec(sensor_size=(4, 4, 2), time_window=100)
    # t = 100 is the edge between windows 0 and 1; nothing in 200..399
    events = make_events([0, 1, 2, 3], [0, 0, 0, 0], [0, 99, 100, 450], [True] * 4)
    frames = ToFrames(spec)(events)
    np.testing.assert_array_equal(frames, tonic_frames(spec, events))
    assert frames.shape[0] == 4  # [0,100) [100,200) [200,300) [300,400); 450 is incomplete
    assert frames[0].sum() == 2 and frames[1].sum() == 1 and not frames[2:].any()


def test_one_event_makes_one_frame() -> None:
    events = make_events([2], [1], [12_345], [False])
    for kwargs in ({"time_window": 1000}, {"event_count": 10}, {"n_time_bins": 3}):
        spec = InputSpec(sensor_size=(4, 4, 2), **kwargs)  # type: ignore[arg-type]
        np.testing.assert_array_equal(ToFrames(spec)(events), tonic_frames(spec, events))


def test_an_empty_recording_makes_what_tonics_to_frame_makes_of_none() -> None:
    empty = np.zeros(0, EVENT_DTYPE)
    for kwargs in (
        {"time_window": 10},
        {"time_window": 10, "start_time": 0, "end_time": 50},
        {"event_count": 10},
        {"n_time_bins": 3},
        {"n_event_bins": 2},
    ):
        spec = InputSpec(sensor_size=(5, 4, 2), **kwargs)  # type: ignore[arg-type]
        theirs = tt.ToFrame(sensor_size=spec.frame_size, **kwargs)(empty)
        ours = ToFrames(spec)(empty)
        # tonic's empty frames come (T, P, W, H): only their count and zeros compare
        assert ours.shape == (len(theirs), 2, 4, 5) and not ours.any()


@pytest.mark.parametrize(("x", "y"), [(34, 0), (0, 34), (-1, 5), (5, -2)])
def test_out_of_range_coordinates_are_refused_naming_the_first(x: int, y: int) -> None:
    spec = InputSpec(sensor_size=(34, 34, 2), time_window=1000)
    events = make_events([1, x, 2], [1, y, 2], [0, 1, 2], [True] * 3)
    with pytest.raises(EventFormatError, match=f"first: event 1 at x={x}, y={y}"):
        spec_frames(events, spec)
    with pytest.raises(EventFormatError, match="outside the spec's 34x34 sensor"):
        SpecBinner(spec).push(events)


def test_absolute_windows_start_at_multiples_of_the_window() -> None:
    spec = InputSpec(sensor_size=(8, 8, 2), time_window=1000, window_start=WindowStart.ABSOLUTE)
    events = make_recording(spec, 5, 300, 10_000)
    events["t"] += 1_234_567  # a live stream's clock
    binner = SpecBinner(spec)
    binned = binner.push(events)
    assert binned.window_start[0] == 1_234_000 and not (binned.window_start % 1000).any()
    frames = np.concatenate([binned.frames, binner.flush().frames])
    np.testing.assert_array_equal(frames, to_nhwc(tonic_frames(spec, events, start_time=1_234_000)))


def test_late_events_are_dropped_and_counted() -> None:
    spec = InputSpec(sensor_size=(8, 8, 2), time_window=100)
    binner = SpecBinner(spec)
    assert len(binner.push(make_events([1, 1], [1, 1], [0, 250], [True, True])).frames) == 2
    out = binner.push(make_events([2, 3], [2, 3], [50, 260], [True, True]))
    assert out.dropped == {"late": 1} and binner.dropped == {"late": 1}


def test_limits_refuse_before_allocating() -> None:
    spec = InputSpec(sensor_size=(1280, 720, 2), time_window=1)
    events = make_events(np.zeros(1000), np.zeros(1000), np.arange(1000), np.ones(1000, bool))
    with pytest.raises(BinningLimitError, match="spans 1000 windows, more than the 64") as info:
        SpecBinner(spec, max_frames=64).push(events)
    assert info.value.limit == "max_frames_per_packet"
    counted = InputSpec(sensor_size=(8, 8, 2), n_event_bins=2)
    binner = SpecBinner(counted, max_events=1500)
    binner.push(events[:1000])
    with pytest.raises(BinningLimitError, match="more than the 1500") as info:
        binner.push(events)
    assert info.value.limit == "max_buffered_events"


def test_the_c_loop_is_built_and_counts_what_numpy_counts() -> None:
    spec = InputSpec(
        sensor_size=(1280, 720, 2),
        time_window=3_000,
        window_start=WindowStart.ABSOLUTE,
        crop=center_crop((1280, 720, 2), (1000, 600)),
        downsample=(7, 5),
        clip_bits=4,
    )
    assert SpecBinner(spec).use_kernel, (
        "spikefleet.events._binning is not built: pip install -e client"
    )
    events = make_recording(spec, 9, 200_000, 40_000)
    events["t"] += 987_654
    events["p"].view(np.uint8)[::7] = 2  # any non-zero byte is ON, in both
    fast, slow = SpecBinner(spec), SpecBinner(spec)
    slow.use_kernel = False
    for packet in np.array_split(events, 13):
        a, b = fast.push(packet), slow.push(packet)
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.window_start, b.window_start)
    np.testing.assert_array_equal(fast.flush().frames, slow.flush().frames)
    late = make_events([500], [300], [987_654], [True])
    assert fast.push(late).dropped == slow.push(late).dropped == {"late": 1}
