"""The N-MNIST binary format: 40-bit big-endian records, read and written.

Each record is x (8 bits), y (8 bits), polarity (1 bit) and a timestamp in
microseconds (23 bits). A record whose y byte is 240 is not an event but a
timestamp-overflow marker: every later timestamp gains 2**13 us. That is how
the original reader (Orchard's eventvision.py) and tonic's ``read_mnist_file``
decode it, so spikefleet decodes it the same way and writes markers that those
readers turn back into the original timestamps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.types import EVENT_DTYPE, as_events

RECORD_BYTES = 5
OVERFLOW_Y = 240
OVERFLOW_INCREMENT_US = 2**13
MAX_TIMESTAMP_US = 2**23 - 1


def decode_nmnist(data: bytes) -> np.ndarray:
    """Decode N-MNIST bytes into an ``EVENT_DTYPE`` array."""
    if len(data) % RECORD_BYTES:
        raise EventFormatError(
            f"N-MNIST data is {len(data)} bytes, not a multiple of {RECORD_BYTES}: "
            "the file is truncated or not an N-MNIST recording"
        )
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES).astype(np.int64)
    overflow = raw[:, 1] == OVERFLOW_Y
    offset = np.cumsum(overflow) * OVERFLOW_INCREMENT_US
    keep = ~overflow
    raw = raw[keep]
    events = np.empty(len(raw), dtype=EVENT_DTYPE)
    events["x"] = raw[:, 0]
    events["y"] = raw[:, 1]
    events["p"] = (raw[:, 2] & 0x80) != 0
    events["t"] = ((raw[:, 2] & 0x7F) << 16 | raw[:, 3] << 8 | raw[:, 4]) + offset[keep]
    return events


def encode_nmnist(events: np.ndarray) -> bytes:
    """Encode events as N-MNIST bytes, inserting overflow markers past 2**23 - 1 us.

    Recordings longer than 2**23 us must be sorted by time (overflow markers
    apply to every later record).
    """
    events = as_events(events)
    x, y, t, p = (events[name].astype(np.int64) for name in ("x", "y", "t", "p"))
    if len(events):
        if x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255:
            raise EventFormatError(
                "N-MNIST stores x and y in one byte each: coordinates must lie in 0..255"
            )
        if (y == OVERFLOW_Y).any():
            raise EventFormatError(
                f"N-MNIST reserves y={OVERFLOW_Y} for timestamp-overflow markers: "
                "an event at that row cannot be stored in this format"
            )
        if t.min() < 0:
            raise EventFormatError("N-MNIST timestamps must be >= 0 us; shift the recording")
    # Markers needed before each event so its stored timestamp fits in 23 bits.
    markers = np.maximum(0, -(-(t - MAX_TIMESTAMP_US) // OVERFLOW_INCREMENT_US))
    if len(events) and markers.max() > 0 and (np.diff(t) < 0).any():
        raise EventFormatError(
            "timestamps beyond 2**23 us need overflow markers, which only work on "
            "time-sorted events: sort by t first (np.sort(events, order='t'))"
        )
    stored = t - markers * OVERFLOW_INCREMENT_US
    new_markers = np.diff(markers, prepend=0)
    records = np.zeros((len(events) + int(new_markers.sum()), RECORD_BYTES), dtype=np.uint8)
    # Each event lands after all markers inserted up to and including its own.
    rows = np.arange(len(events)) + np.cumsum(new_markers)
    records[rows, 0] = x
    records[rows, 1] = y
    records[rows, 2] = (p << 7) | (stored >> 16)
    records[rows, 3] = (stored >> 8) & 0xFF
    records[rows, 4] = stored & 0xFF
    is_event = np.zeros(len(records), dtype=bool)
    is_event[rows] = True
    records[~is_event, 1] = OVERFLOW_Y
    return records.tobytes()


def read_nmnist(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an N-MNIST ``.bin`` recording into an ``EVENT_DTYPE`` array."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EventFormatError(f"no N-MNIST file at {path}") from None
    try:
        return decode_nmnist(data)
    except EventFormatError as exc:
        raise EventFormatError(f"{path}: {exc}") from None


def write_nmnist(path: str | os.PathLike[str], events: np.ndarray) -> None:
    """Write events to an N-MNIST ``.bin`` file (see :func:`encode_nmnist`)."""
    Path(path).write_bytes(encode_nmnist(events))
