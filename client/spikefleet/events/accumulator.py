"""Frames from a live event stream that arrives in packets.

Live packets can be empty, arrive late, or hold events out of time order.
The accumulator cuts time into fixed windows, keeps a window open until the
stream's newest timestamp has moved ``lateness_us`` past its end, and drops
(and counts) what it cannot place instead of raising, so one bad packet never
stops a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.frames import SensorSize, accumulate, check_bits, check_sensor_size
from spikefleet.events.types import as_events

#: Reasons an event is dropped.
DROP_LATE = "late"  # its window was already emitted (or it predates the stream start)
DROP_OUT_OF_BOUNDS = "out_of_bounds"  # x or y outside the sensor


@dataclass
class Emitted:
    """What one :meth:`FrameAccumulator.push` or :meth:`~FrameAccumulator.flush` produced."""

    frames: np.ndarray  # uint8 (N, H, W, C)
    window_start_us: np.ndarray  # int64 (N,), start of each frame's window
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> events dropped this call


@dataclass
class AccumulatorStats:
    events_accepted: int = 0
    frames_emitted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class FrameAccumulator:
    """Collect event packets into frames of ``time_window_us`` each.

    Windows are ``[t0 + k*W, t0 + (k+1)*W)`` with ``t0`` the earliest timestamp of
    the first non-empty packet. A window is emitted once an event at or after
    ``its end + lateness_us`` has been seen (or on :meth:`flush`). Windows that
    received no events produce no frame.
    """

    def __init__(
        self,
        sensor_size: SensorSize = (34, 34, 2),
        *,
        time_window_us: int,
        lateness_us: int = 0,
        bits: int = 4,
    ) -> None:
        if time_window_us <= 0:
            raise EventFormatError(f"time_window_us must be positive, got {time_window_us}")
        if lateness_us < 0:
            raise EventFormatError(f"lateness_us must be >= 0, got {lateness_us}")
        self.sensor_size = check_sensor_size(sensor_size)
        self.bits = check_bits(bits)
        self.time_window_us = int(time_window_us)
        self.lateness_us = int(lateness_us)
        self.stats = AccumulatorStats()
        self._t0: int | None = None
        self._next_window = 0  # first window index not yet emitted
        self._newest_t: int | None = None
        self._pending: list[np.ndarray] = []

    def push(self, packet: np.ndarray) -> Emitted:
        """Add one packet; return the frames of every window it closed."""
        events = as_events(packet)
        dropped: dict[str, int] = {}
        width, height, _ = self.sensor_size
        inside = (
            (events["x"] >= 0) & (events["x"] < width) & (events["y"] >= 0) & (events["y"] < height)
        )
        self._count(dropped, DROP_OUT_OF_BOUNDS, len(events) - int(inside.sum()))
        events = events[inside]
        if len(events) == 0:
            return self._finish(self._empty(), dropped)
        if self._t0 is None:
            self._t0 = int(events["t"].min())
        window = (events["t"] - self._t0) // self.time_window_us
        on_time = window >= self._next_window
        self._count(dropped, DROP_LATE, len(events) - int(on_time.sum()))
        events = events[on_time]
        if len(events):
            self._pending.append(events)
            self.stats.events_accepted += len(events)
            newest = int(events["t"].max())
            self._newest_t = newest if self._newest_t is None else max(self._newest_t, newest)
        if self._newest_t is None:
            return self._finish(self._empty(), dropped)
        closed_before = (self._newest_t - self.lateness_us - self._t0) // self.time_window_us
        return self._finish(self._emit(closed_before), dropped)

    def flush(self) -> Emitted:
        """Emit every open window (end of stream)."""
        if not self._pending:
            return self._finish(self._empty(), {})
        newest = max(int(chunk["t"].max()) for chunk in self._pending)
        assert self._t0 is not None
        return self._finish(self._emit((newest - self._t0) // self.time_window_us + 1), {})

    def _emit(self, closed_before: int) -> Emitted:
        """Emit windows with index < ``closed_before``; keep the rest pending."""
        if closed_before <= self._next_window or not self._pending:
            return self._empty()
        assert self._t0 is not None
        events = np.concatenate(self._pending)
        window = (events["t"] - self._t0) // self.time_window_us
        ready = window < closed_before
        self._pending = [events[~ready]] if (~ready).any() else []
        ready_windows, index = np.unique(window[ready], return_inverse=True)
        frames = accumulate(events[ready], index, len(ready_windows), self.sensor_size, self.bits)
        self._next_window = closed_before
        starts = self._t0 + ready_windows.astype(np.int64) * self.time_window_us
        return Emitted(frames=frames, window_start_us=starts)

    def _empty(self) -> Emitted:
        width, height, channels = self.sensor_size
        return Emitted(
            frames=np.zeros((0, height, width, channels), np.uint8),
            window_start_us=np.zeros(0, np.int64),
        )

    def _finish(self, emitted: Emitted, dropped: dict[str, int]) -> Emitted:
        emitted.dropped = dropped
        self.stats.frames_emitted += len(emitted.frames)
        return emitted

    def _count(self, dropped: dict[str, int], reason: str, n: int) -> None:
        if n:
            dropped[reason] = dropped.get(reason, 0) + n
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + n
