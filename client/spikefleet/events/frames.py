"""Events to input frames without writing an InputSpec: a shorthand over spikefleet.events.binning.

Frames are ``uint8`` with shape (N, H, W, C), the layout Akida's InputData
takes. ``sensor_size`` follows tonic's convention (width, height, polarities).
"""

from __future__ import annotations

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.binning import spec_frames
from spikefleet.events.spec import InputSpec, InputSpecError
from spikefleet.events.types import as_events

SensorSize = tuple[int, int, int]


def to_frames(
    events: np.ndarray,
    sensor_size: SensorSize = (34, 34, 2),
    *,
    time_window_us: int | None = None,
    event_count: int | None = None,
    include_incomplete: bool = False,
    bits: int = 4,
) -> np.ndarray:
    """Turn events into uint8 frames of shape (N, H, W, C), as tonic's ToFrame slices them.

    ``time_window_us`` cuts windows from the first event, ``event_count`` groups
    of that many events; the incomplete last one is dropped unless
    ``include_incomplete``. With neither, the whole recording is one frame.
    Counts saturate at ``2**bits - 1``. A 1-polarity ``sensor_size`` merges
    polarities. For anything more (crop, downsample, filters), write an
    :class:`~spikefleet.events.InputSpec`.
    """
    if time_window_us is not None and event_count is not None:
        raise EventFormatError("pass time_window_us or event_count, not both")
    events = as_events(events)
    binning: dict[str, int] = {"n_event_bins": 1}
    if time_window_us is not None:
        binning = {"time_window": time_window_us}
    elif event_count is not None:
        binning = {"event_count": event_count}
    try:
        spec = InputSpec(
            sensor_size=sensor_size,
            include_incomplete=include_incomplete and "n_event_bins" not in binning,
            clip_bits=bits,
            **binning,  # type: ignore[arg-type]
        )
    except InputSpecError as exc:
        raise EventFormatError(str(exc)) from None
    return spec_frames(events, spec)
