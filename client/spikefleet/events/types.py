"""The event array: one structured numpy record per DVS event, tonic-compatible.

Using tonic's own dtype means arrays move between spikefleet and tonic's
transforms without copying or renaming fields.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spikefleet.errors import EventFormatError

#: tonic's ``events_struct``: x, y (pixels), t (microseconds), p (True = ON, False = OFF).
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])

_FIELDS = ("x", "y", "t", "p")


def make_events(
    x: npt.ArrayLike, y: npt.ArrayLike, t: npt.ArrayLike, p: npt.ArrayLike
) -> np.ndarray:
    """Build an ``EVENT_DTYPE`` array from per-field sequences of equal length."""
    columns = [np.asarray(v).reshape(-1) for v in (x, y, t, p)]
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise EventFormatError(
            f"event fields have different lengths {[len(c) for c in columns]}: "
            "pass x, y, t and p with one entry per event"
        )
    events = np.empty(lengths.pop(), dtype=EVENT_DTYPE)
    for name, column in zip(_FIELDS, columns, strict=True):
        events[name] = column
    return events


def as_events(events: np.ndarray) -> np.ndarray:
    """Return ``events`` as an ``EVENT_DTYPE`` array (a no-op if it already is one).

    Accepts any structured array with x, y, t and p fields, such as tonic datasets
    that use plain ``int`` fields.
    """
    names = getattr(getattr(events, "dtype", None), "names", None)
    if names is None or not set(_FIELDS) <= set(names):
        raise EventFormatError(
            "events must be a structured numpy array with fields x, y, t, p "
            f"(got {getattr(events, 'dtype', type(events))}); build one with make_events()"
        )
    if events.ndim != 1:
        raise EventFormatError(f"events must be one-dimensional, got shape {events.shape}")
    if events.dtype == EVENT_DTYPE:
        return events
    return make_events(events["x"], events["y"], events["t"], events["p"] != 0)


def check_sensor_bounds(events: np.ndarray, width: int, height: int) -> None:
    """Raise EventFormatError if any event lies outside a width x height sensor."""
    if len(events) == 0:
        return
    bad = (events["x"] < 0) | (events["x"] >= width) | (events["y"] < 0) | (events["y"] >= height)
    if bad.any():
        first = events[np.argmax(bad)]
        raise EventFormatError(
            f"{int(bad.sum())} event(s) lie outside the {width}x{height} sensor "
            f"(first at x={int(first['x'])}, y={int(first['y'])}): "
            "pass the recording's real sensor_size or crop the events first"
        )
