"""Event recordings for tests, and tonic's own frames for an InputSpec (the reference).

``tonic_frames`` builds the tonic pipeline a user would write for a spec
(filters, CenterCrop, Downsample, MergePolarities, ToFrame) and runs tonic
itself, so spikefleet's frames are checked against tonic, not against a copy.
"""

from __future__ import annotations

import numpy as np
import tonic.transforms as tt

from spikefleet.events import EVENT_DTYPE, InputSpec, Polarity, WindowStart


def recording(
    rng: np.random.Generator,
    sensor: tuple[int, int],
    n: int,
    duration_us: int,
    *,
    start_us: int = 0,
) -> np.ndarray:
    """``n`` time-sorted random events on a width x height sensor."""
    events = np.empty(n, EVENT_DTYPE)
    events["x"] = rng.integers(0, sensor[0], n)
    events["y"] = rng.integers(0, sensor[1], n)
    events["t"] = np.sort(rng.integers(start_us, start_us + max(duration_us, 1), n))
    events["p"] = rng.integers(0, 2, n).astype(bool)
    return events


def tonic_pipeline(spec: InputSpec, start_time: int | None = None) -> list[object]:
    """The tonic transforms the spec names, in spikefleet's order.

    A crop box must be tonic's CenterCrop box; ``start_time`` resolves a window
    start tonic cannot express (ABSOLUTE) for the recording at hand."""
    steps: list[object] = []
    if spec.denoise_filter_time is not None:
        steps.append(tt.Denoise(filter_time=spec.denoise_filter_time))
    if spec.refractory_delta is not None:
        steps.append(tt.RefractoryPeriod(delta=spec.refractory_delta))
    width, height, polarities = spec.sensor_size
    if spec.crop is not None:
        crop = spec.crop
        assert (crop.x, crop.y) == ((width - crop.width) // 2, (height - crop.height) // 2)
        steps.append(tt.CenterCrop(sensor_size=spec.sensor_size, size=(crop.width, crop.height)))
    if spec.downsample != (1, 1):
        kx, ky = spec.downsample
        steps.append(tt.Downsample(spatial_factor=(1 / kx, 1 / ky)))
    if spec.polarity is Polarity.MERGED and polarities == 2:
        steps.append(tt.MergePolarities())
    if start_time is None and spec.window_start is WindowStart.START_TIME:
        start_time = spec.start_time
    kwargs: dict[str, object] = {spec.binning.value: spec.amount, "overlap": spec.overlap}
    if spec.binning.value in ("time_window", "event_count"):
        kwargs["include_incomplete"] = spec.include_incomplete
    if spec.binning.value == "time_window":
        kwargs.update(start_time=start_time, end_time=spec.end_time)
    steps.append(tt.ToFrame(sensor_size=spec.frame_size, **kwargs))
    return steps


def tonic_frames(spec: InputSpec, events: np.ndarray, start_time: int | None = None) -> np.ndarray:
    """tonic's (T, P, H, W) int16 frames for the spec, clipped as the spec says.

    Run as tonic.transforms.Compose runs them, except that when the filters or
    the crop leave no event, this returns what tonic's ToFrame returns for no
    events (one empty frame, or n_*_bins of them) in (T, P, H, W) order, where
    Compose would return the empty event array itself."""
    *before, to_frame = tonic_pipeline(spec, start_time)
    events = events.copy()
    for step in before:
        if len(events) == 0:
            break
        events = step(events)  # type: ignore[operator]
    if len(events) == 0:
        width, height, channels = spec.frame_size
        count = spec.amount if spec.per_sample_only else 1
        return np.zeros((count, channels, height, width), np.int16)
    frames = to_frame(events)  # type: ignore[operator]
    if spec.clip_bits is not None:
        frames = np.minimum(frames, (1 << spec.clip_bits) - 1).astype(np.int16)
    return np.asarray(frames)


def to_nhwc(frames: np.ndarray) -> np.ndarray:
    """tonic's (T, P, H, W) counts as a program's uint8 (N, H, W, C) input."""
    return np.ascontiguousarray(frames.transpose(0, 2, 3, 1)).astype(np.uint8)
