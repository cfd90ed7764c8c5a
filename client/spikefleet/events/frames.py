"""Events to input frames: per-pixel ON/OFF event counts, clipped to the input bit width.

Frames are ``uint8`` with shape (N, H, W, C), the layout Akida's InputData
takes. ``sensor_size`` follows tonic's convention (width, height, polarities).
"""

from __future__ import annotations

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.types import as_events, check_sensor_bounds

SensorSize = tuple[int, int, int]


def check_sensor_size(sensor_size: SensorSize) -> tuple[int, int, int]:
    """Validate a (width, height, channels) sensor size; channels is 1 or 2."""
    try:
        width, height, channels = (int(v) for v in sensor_size)
    except (TypeError, ValueError):
        raise EventFormatError(
            f"sensor_size must be (width, height, channels), got {sensor_size!r}"
        ) from None
    if width <= 0 or height <= 0 or channels not in (1, 2):
        raise EventFormatError(
            f"sensor_size {sensor_size!r} is invalid: width and height must be positive and "
            "channels 1 (polarities merged) or 2 (OFF in channel 0, ON in channel 1)"
        )
    return width, height, channels


def check_bits(bits: int) -> int:
    if not 1 <= int(bits) <= 8:
        raise EventFormatError(f"bits must lie in 1..8 (uint8 frames), got {bits}")
    return int(bits)


def accumulate(
    events: np.ndarray, frame_index: np.ndarray, n_frames: int, sensor_size: SensorSize, bits: int
) -> np.ndarray:
    """Count events into ``n_frames`` frames by their precomputed ``frame_index``.

    The caller has already checked bounds; one bincount does all the work.
    """
    width, height, channels = sensor_size
    channel = events["p"].astype(np.int64) if channels == 2 else 0
    flat = (
        (frame_index.astype(np.int64) * height + events["y"]) * width + events["x"]
    ) * channels + channel
    counts = np.bincount(flat, minlength=n_frames * height * width * channels)
    np.minimum(counts, (1 << bits) - 1, out=counts)
    return counts.astype(np.uint8).reshape(n_frames, height, width, channels)


def to_frames(
    events: np.ndarray,
    sensor_size: SensorSize = (34, 34, 2),
    *,
    time_window_us: int | None = None,
    event_count: int | None = None,
    bits: int = 4,
) -> np.ndarray:
    """Turn events into uint8 frames of shape (N, H, W, C).

    With neither ``time_window_us`` nor ``event_count`` the whole recording is one
    frame. ``time_window_us`` cuts consecutive windows starting at the earliest
    event (the last one may be partial); ``event_count`` cuts the time-sorted
    events into groups of that many (the last may hold fewer). Counts saturate at
    ``2**bits - 1``, the largest value an input of that width can carry.
    """
    if time_window_us is not None and event_count is not None:
        raise EventFormatError("pass time_window_us or event_count, not both")
    events = as_events(events)
    sensor = check_sensor_size(sensor_size)
    bits = check_bits(bits)
    check_sensor_bounds(events, sensor[0], sensor[1])
    if time_window_us is not None:
        if time_window_us <= 0:
            raise EventFormatError(f"time_window_us must be positive, got {time_window_us}")
        if len(events) == 0:
            return accumulate(events, np.zeros(0, np.int64), 0, sensor, bits)
        index = (events["t"] - events["t"].min()) // int(time_window_us)
        return accumulate(events, index, int(index.max()) + 1, sensor, bits)
    if event_count is not None:
        if event_count <= 0:
            raise EventFormatError(f"event_count must be positive, got {event_count}")
        order = np.argsort(events["t"], kind="stable")
        events = events[order]
        n_frames = -(-len(events) // int(event_count))
        index = np.arange(len(events)) // int(event_count)
        return accumulate(events, index, n_frames, sensor, bits)
    return accumulate(events, np.zeros(len(events), np.int64), 1, sensor, bits)
