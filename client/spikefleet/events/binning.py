"""The one implementation of an InputSpec: events in, frames out, offline or live.

:class:`SpecBinner` takes a sample's (or a live stream's) events in packets,
carries filter state and open windows across packets, and emits every frame
as soon as its window is complete; :meth:`SpecBinner.flush` ends the sample
with tonic's rules for the last windows. The offline forms are the same code
fed in one packet: :class:`ToFrames` (a tonic/torch transform, (T, P, H, W)
int16 like ``tonic.transforms.ToFrame``) and :func:`spec_frames` (the
program's uint8 (N, H, W, C) frames). So live frames equal offline frames
by construction, and both equal tonic's (tests/events check against tonic).

Cost per event is a handful of vectorised numpy passes: one bounds check,
two table look-ups that crop and downsample (tonic's float arithmetic,
precomputed per pixel column and row), and one ``bincount`` on linear
(frame, pixel) indices.

Events are expected in time order, as tonic expects them. Inside a packet
order does not matter for time windows; an event older than a window already
emitted is dropped and counted (``dropped["late"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import numpy as np
import numpy.typing as npt

from spikefleet.errors import EventFormatError
from spikefleet.events.spec import Binning, InputSpec, Polarity, WindowStart
from spikefleet.events.types import as_events

_kernel: ModuleType | None
try:  # the C loop beside this file; numpy does the same where it is not built
    from spikefleet.events import _binning as _kernel
except ImportError:  # pragma: no cover - an install from before the extension existed
    _kernel = None

Layout = Literal["nhwc", "tonic"]
_INT64_MAX = (1 << 63) - 1
_OUT = -(1 << 40)  # table entry for a cropped-out row or column: any sum stays negative


class BinningLimitError(EventFormatError):
    """Binning would exceed a configured bound (frames per packet, buffered events).

    ``limit`` names the bound, so a server can say which setting to change."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass
class Binned:
    """Frames one push or flush made, with where each one's window starts.

    ``window_start`` is in microseconds for time binning and an event index
    (from the sample's first event) for event-count binning."""

    frames: np.ndarray
    window_start: npt.NDArray[np.int64]
    dropped: dict[str, int] = field(default_factory=dict)


class _Pixels:
    """Raw (x, y, p) -> linear pixel index of the output frame, or negative if cropped out."""

    def __init__(self, spec: InputSpec, layout: Layout) -> None:
        width, height, _ = spec.sensor_size
        frame_w, frame_h, channels = spec.frame_size
        self.size = frame_w * frame_h * channels
        kx, ky = spec.downsample
        crop = spec.crop
        x0, y0 = (crop.x, crop.y) if crop is not None else (0, 0)
        cw, ch = (crop.width, crop.height) if crop is not None else (width, height)
        # tonic: CenterCrop keeps x0 <= x < x0 + w and shifts by x0; Downsample then
        # multiplies by the float 1/k and truncates to int16.
        xs = np.arange(width, dtype=np.int64) - x0
        ys = np.arange(height, dtype=np.int64) - y0
        col = (xs * (1 / kx)).astype(np.int16).astype(np.int64)
        row = (ys * (1 / ky)).astype(np.int16).astype(np.int64)
        if layout == "nhwc":
            col_step, row_step, self.channel_step = channels, frame_w * channels, 1
        else:
            col_step, row_step, self.channel_step = 1, frame_w, frame_w * frame_h
        # int32 tables gathered with np.take are several times faster than int64 fancy
        # indexing; frames of 2**29 values or more (none a program takes) use int64.
        self.dtype = np.int32 if self.size < (1 << 29) else np.int64
        out = -(1 << 30) if self.dtype == np.int32 else _OUT
        self.col = np.where((xs >= 0) & (xs < cw), col * col_step, out).astype(self.dtype)
        self.row = np.where((ys >= 0) & (ys < ch), row * row_step, out).astype(self.dtype)
        self.cropped = crop is not None
        self.split = spec.polarity is Polarity.SPLIT
        self.width, self.height = width, height

    def check(self, events: np.ndarray) -> None:
        """Refuse events outside the sensor, naming the first."""
        x, y = events["x"], events["y"]
        bad = (x.view(np.uint16) >= self.width) | (y.view(np.uint16) >= self.height)
        if bad.any():
            first = int(np.argmax(bad))
            raise EventFormatError(
                f"{int(bad.sum())} event(s) lie outside the spec's {self.width}x{self.height} "
                f"sensor (first: event {first} at x={int(x[first])}, y={int(y[first])}): send "
                "events of the sensor the program's input spec names, or fix its sensor_size"
            )

    def __call__(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (checked) events' pixel indices, and which of them the crop keeps."""
        pix = np.take(self.row, events["y"])
        pix += np.take(self.col, events["x"])
        if self.split:
            on = events["p"].view(np.uint8) != 0  # any non-zero byte is ON, as in C
            pix += on.astype(self.dtype) * self.channel_step
        return pix, pix >= 0


class _Filters:
    """tonic's Denoise and RefractoryPeriod, with per-pixel state carried across packets.

    tonic sizes its pixel memory from the recording's largest x and y; this
    uses the sensor's, which differs only for a recording whose every event
    is at pixel (0, 0)."""

    def __init__(self, spec: InputSpec) -> None:
        width, height, _ = spec.sensor_size
        self.width, self.height = width, height
        self.denoise = spec.denoise_filter_time
        self.refractory = spec.refractory_delta
        pixels = width * height
        # Each holds, per pixel, what tonic's timestamp_memory holds.
        self._denoise_memory = (
            np.full(pixels, self.denoise, np.int64) if self.denoise is not None else None
        )
        self._refractory_memory = (
            np.full(pixels, -self.refractory, np.int64) if self.refractory is not None else None
        )

    @property
    def active(self) -> bool:
        return self.denoise is not None or self.refractory is not None

    @property
    def nbytes(self) -> int:
        return sum(
            m.nbytes for m in (self._denoise_memory, self._refractory_memory) if m is not None
        )

    def __call__(self, events: np.ndarray) -> np.ndarray:
        if not len(events):
            return events
        if self._denoise_memory is not None:
            events = events[self._denoise(events)]
        if self._refractory_memory is not None and len(events):
            events = events[self._refractory(events)]
        return events

    def _last_before(
        self, pix: np.ndarray, memory: np.ndarray, t_plus: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Events sorted by (pixel, order); for each, the memory value of the previous
        event at its pixel (or the carried state); and updates the carried state."""
        n = len(pix)
        order = np.lexsort((np.arange(n), pix))
        sorted_pix = pix[order]
        first = np.ones(n, bool)
        first[1:] = sorted_pix[1:] != sorted_pix[:-1]
        previous = np.empty(n, np.int64)
        previous[1:] = t_plus[order][:-1]
        previous[first] = memory[sorted_pix[first]]
        last = np.ones(n, bool)
        last[:-1] = first[1:]
        memory[sorted_pix[last]] = t_plus[order][last]
        return order, sorted_pix, previous

    def _refractory(self, events: np.ndarray) -> np.ndarray:
        assert self._refractory_memory is not None and self.refractory is not None
        pix = events["x"].astype(np.int64) * self.height + events["y"]
        t = events["t"].astype(np.int64)
        order, _, previous = self._last_before(pix, self._refractory_memory, t)
        keep = np.empty(len(events), bool)
        keep[order] = t[order] - previous > self.refractory
        return keep

    def _denoise(self, events: np.ndarray) -> np.ndarray:
        """Kept iff a 4-neighbour's memory (its last event's t + filter_time, in
        stream order, or the carried state) exceeds the event's t."""
        assert self._denoise_memory is not None and self.denoise is not None
        n = len(events)
        x = events["x"].astype(np.int64)
        y = events["y"].astype(np.int64)
        t = events["t"].astype(np.int64)
        pix = x * self.height + y
        memory_before = self._denoise_memory.copy()
        key = pix * n + np.arange(n)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        t_plus = (t + self.denoise)[order]
        keep = np.zeros(n, bool)
        index = np.arange(n)
        for dx, dy, inside in (
            (-1, 0, x > 0),
            (1, 0, x < self.width - 1),
            (0, -1, y > 0),
            (0, 1, y < self.height - 1),
        ):
            neighbour = (x + dx) * self.height + (y + dy)
            at = np.searchsorted(sorted_key, neighbour * n + index) - 1
            safe = np.maximum(at, 0)
            same = (at >= 0) & (sorted_key[safe] // n == neighbour)
            value = np.where(
                same, t_plus[safe], memory_before[np.clip(neighbour, 0, len(memory_before) - 1)]
            )
            keep |= inside & (value > t)
        sorted_pix = sorted_key // n
        last = np.ones(n, bool)
        last[:-1] = sorted_pix[1:] != sorted_pix[:-1]
        self._denoise_memory[sorted_pix[last]] = t_plus[last]
        return keep


class SpecBinner:
    """Bins one sample's (or one live stream's) events by ``spec``, packet by packet.

    ``layout`` "nhwc" gives uint8 (N, H, W, C) program frames (counts clipped to
    the spec's clip_bits, else to 255); "tonic" gives (N, P, H, W) int16 as
    tonic's ToFrame does (clipped only when the spec says so). ``max_frames``
    bounds the windows one push may make or open, ``max_events`` the events held
    between pushes and ``max_bytes`` the memory held for open windows; each
    raises :class:`BinningLimitError` before allocating.

    Windows that do not overlap (the usual case) are counted as events arrive,
    into the open windows' count buffers, so no event is held; overlapping and
    per-sample bins keep the events until their windows are complete.
    """

    def __init__(
        self,
        spec: InputSpec,
        *,
        layout: Layout = "nhwc",
        max_frames: int | None = None,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.spec = spec
        self.layout = layout
        self.max_frames = max_frames
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._pixels = _Pixels(spec, layout)
        self._filters = _Filters(spec)
        frame_w, frame_h, channels = spec.frame_size
        self._shape = (
            (frame_h, frame_w, channels) if layout == "nhwc" else (channels, frame_h, frame_w)
        )
        self._binning = spec.binning
        per_sample = self._binning in (Binning.N_TIME_BINS, Binning.N_EVENT_BINS)
        self._window = 0 if per_sample else spec.amount
        self._stride = int(self._window - spec.overlap) if self._window else 0
        self._direct = self._window > 0 and self._stride == self._window
        # the C loop serves direct time windows over int32 tables with no filters
        self.use_kernel = (
            _kernel is not None
            and self._direct
            and self._binning is Binning.TIME_WINDOW
            and self._pixels.dtype == np.int32
            and not self._filters.active
        )
        self._size = self._pixels.size
        self._open = np.zeros(0, np.int64)  # counts of the open windows next, next + 1, ...
        self._open_windows = 0
        self._origin: int | None = None  # start of window 0 (us, or event index)
        self._next = 0  # first window not yet emitted
        self._seen = 0  # events kept so far (event-count binning's clock)
        self._newest: int | None = None  # largest t that reached binning (tonic's t[-1])
        self._reached = 0  # events that reached binning (after filters and crop)
        self._pending_key: list[np.ndarray] = []  # t (time) or event index (count)
        self._pending_pix: list[np.ndarray] = []
        self._buffered = 0
        self.events_in = 0
        self.frames_out = 0
        self.dropped: dict[str, int] = {}
        if spec.window_start is WindowStart.START_TIME:
            self._origin = spec.start_time
        if self._binning is Binning.EVENT_COUNT:
            self._origin = 0

    # ---------------------------------------------------------------- public

    @property
    def buffered_events(self) -> int:
        """Events held for windows not yet complete."""
        return self._buffered

    @property
    def nbytes(self) -> int:
        """Memory this binner holds: buffered events and filter state."""
        return self._buffered * 16 + self._open.nbytes + self._filters.nbytes

    def push(self, events: np.ndarray) -> Binned:
        """Add a packet; return the frames of every window it completed."""
        events = as_events(events)
        self.events_in += len(events)
        dropped: dict[str, int] = {}
        if self.use_kernel:
            out = self._push_time_kernel(events, dropped)
            return self._pushed(out, dropped)
        self._pixels.check(events)
        if self._filters.active:
            events = self._filters(events)
        pix, keep = self._pixels(events)
        if self._pixels.cropped:
            events, pix = events[keep], pix[keep]
        if self._binning is Binning.TIME_WINDOW:
            out = self._push_time(events["t"].astype(np.int64), pix, dropped)
        elif self._binning is Binning.EVENT_COUNT:
            out = self._push_count_direct(pix) if self._direct else self._push_count(pix)
        else:
            self._hold(events["t"].astype(np.int64), pix)
            out = self._empty()
        return self._pushed(out, dropped)

    def _pushed(self, out: Binned, dropped: dict[str, int]) -> Binned:
        out.dropped = dropped
        for reason, n in dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self.frames_out += len(out.frames)
        return out

    def flush(self) -> Binned:
        """End of the sample (or stream): emit its last windows by tonic's rules."""
        if self._binning is Binning.TIME_WINDOW:
            out = self._flush_time()
        elif self._binning is Binning.EVENT_COUNT:
            out = self._flush_count()
        else:
            out = self._flush_bins()
        self.frames_out += len(out.frames)
        return out

    # ---------------------------------------------------------------- time windows

    def _window_count(self, duration: int) -> int:
        """tonic's slice count for a recording ``duration`` us long (at least one)."""
        span = duration - self._window
        if not self.spec.include_incomplete:
            n = span // self._stride + 1
        else:
            n = -(-span // self._stride) + 1
        return max(int(n), 1)

    def _cap(self) -> int | None:
        """With end_time, the sample's number of windows is fixed."""
        if self.spec.end_time is None or self._origin is None:
            return None
        return self._window_count(self.spec.end_time - self._origin)

    def _push_time(self, t: np.ndarray, pix: np.ndarray, dropped: dict[str, int]) -> Binned:
        if not len(t):
            return self._empty()
        self._reached += len(t)
        newest = int(t.max())
        self._newest = newest if self._newest is None else max(self._newest, newest)
        if self._origin is None:
            first = int(t.min())
            if self.spec.window_start is WindowStart.ABSOLUTE:
                first = first // self._stride * self._stride
            self._origin = first
        origin = self._origin
        # An event is placeable while the first unemitted window (or a later one) holds it.
        earliest = origin + self._next * self._stride
        on_time = t >= earliest
        late = len(t) - int(np.count_nonzero(on_time))
        if late:
            dropped["late"] = late  # before the window start, or its window was emitted
        cap = self._cap()
        if cap is not None:
            inside = t < origin + (cap - 1) * self._stride + self._window
            after = int(np.count_nonzero(on_time & ~inside))
            if after:
                dropped["after_end"] = after  # past end_time's last window
            on_time &= inside
        if late or (cap is not None and not on_time.all()):
            t, pix = t[on_time], pix[on_time]
        if not len(t):
            return self._empty()
        # Window k is complete once an event at or after its end has been seen.
        complete = (self._newest - origin - self._window) // self._stride + 1
        if cap is not None:
            complete = min(complete, cap)
        if not self._direct:
            self._hold(t, pix)
            return self._emit_time(complete)
        first = (int(t.min()) - origin) // self._window
        last = (int(t.max()) - origin) // self._window
        if first == last:
            self._count_into(first - self._next, pix)
        else:
            self._count_into((t - origin) // self._window - self._next, pix, last - self._next)
        return self._release(complete)

    def _push_time_kernel(self, events: np.ndarray, dropped: dict[str, int]) -> Binned:
        """_push_time for direct windows, in two C passes over the packed records."""
        assert _kernel is not None
        data = np.ascontiguousarray(events)
        pixels = self._pixels
        bad, kept, tmin, tmax = _kernel.scan(
            data, pixels.width, pixels.height, pixels.row, pixels.col
        )
        if bad >= 0:
            pixels.check(events)  # raises, naming the first
        if not kept:
            return self._empty()
        self._reached += kept
        self._newest = tmax if self._newest is None else max(self._newest, tmax)
        if self._origin is None:
            first = tmin
            if self.spec.window_start is WindowStart.ABSOLUTE:
                first = first // self._stride * self._stride
            self._origin = first
        origin, window = self._origin, self._window
        earliest = origin + self._next * window
        cap = self._cap()
        end = _INT64_MAX if cap is None else origin + (cap - 1) * window + window
        complete = (self._newest - origin - window) // window + 1
        if cap is not None:
            complete = min(complete, cap)
        last = (min(tmax, end - 1) - origin) // window
        if tmax >= earliest and last >= self._next:
            self._count_into(last - self._next, np.zeros(0, np.int32))  # size the buffers
        late, after = _kernel.count(
            data,
            pixels.row,
            pixels.col,
            pixels.channel_step if pixels.split else 0,
            origin,
            window,
            self._next,
            min(max(earliest, -_INT64_MAX), _INT64_MAX),
            min(end, _INT64_MAX),
            self._open,
            self._size,
        )
        if late:
            dropped["late"] = late
        if after:
            dropped["after_end"] = after
        return self._release(complete)

    def _emit_time(self, upto: int) -> Binned:
        """Emit windows [next, upto); keep the events later windows still need."""
        if self._direct:
            return self._release(upto)
        count = upto - self._next
        if count <= 0:
            return self._empty()
        self._check_frames(count)
        assert self._origin is not None
        t, pix = self._take()
        first = self._next
        starts = self._origin + np.arange(first, upto, dtype=np.int64) * self._stride
        if self._stride == self._window:
            window = (t - self._origin) // self._stride
            ready = window < upto
            frames = self._count_frames((window[ready] - first), pix[ready], count)
            rest = ~ready
        else:
            order = np.argsort(t, kind="stable")
            t, pix = t[order], pix[order]
            lo = np.searchsorted(t, starts)
            hi = np.searchsorted(t, starts + self._window)
            frames = self._count_ranges(lo, hi, pix, count)
            rest = t >= self._origin + upto * self._stride
        self._put_back(t[rest], pix[rest])
        self._next = upto
        return Binned(frames=frames, window_start=starts)

    def _flush_time(self) -> Binned:
        if self._newest is None or self._origin is None:
            # No event reached binning: tonic's ToFrame makes one empty frame of none.
            return self._zeros(1) if self._next == 0 else self._empty()
        end = self.spec.end_time if self.spec.end_time is not None else self._newest
        return self._emit_time(self._window_count(end - self._origin))

    # ---------------------------------------------------------------- event counts

    def _push_count(self, pix: np.ndarray) -> Binned:
        if not len(pix):
            return self._empty()
        index = self._seen + np.arange(len(pix), dtype=np.int64)
        self._seen += len(pix)
        self._hold(index, pix)
        # Window k holds events [k*stride, k*stride + count): complete once all have arrived.
        complete = (self._seen - self._window) // self._stride + 1
        return self._emit_count(max(complete, 0), self._window)

    def _emit_count(self, upto: int, size: int) -> Binned:
        count = upto - self._next
        if count <= 0:
            return self._empty()
        self._check_frames(count)
        index, pix = self._take()
        order = np.argsort(index, kind="stable")
        index, pix = index[order], pix[order]
        starts = np.arange(self._next, upto, dtype=np.int64) * self._stride
        lo = np.searchsorted(index, starts)
        hi = np.searchsorted(index, starts + size)
        frames = self._count_ranges(lo, hi, pix, count)
        rest = index >= upto * self._stride
        self._put_back(index[rest], pix[rest])
        self._next = upto
        return Binned(frames=frames, window_start=starts)

    def _push_count_direct(self, pix: np.ndarray) -> Binned:
        """Groups of ``event_count`` events, counted as they arrive."""
        if not len(pix):
            return self._empty()
        size, begin = self._window, self._seen
        self._seen += len(pix)
        first, last = begin // size, (self._seen - 1) // size
        self._check_frames(last - self._next + 1)
        for k in range(first, last + 1):
            lo, hi = max(k * size - begin, 0), min((k + 1) * size - begin, len(pix))
            self._count_into(k - self._next, pix[lo:hi])
        return self._release(self._seen // size)

    def _flush_count(self) -> Binned:
        total = self._seen
        size = min(self._window, total)  # tonic: fewer events than one window make one frame
        span = total - size
        if self.spec.include_incomplete:
            n = -(-span // self._stride) + 1
        else:
            n = span // self._stride + 1
        if self._direct:
            return self._release(int(n))
        return self._emit_count(int(n), size)

    # ---------------------------------------------------------------- bins per sample

    def _flush_bins(self) -> Binned:
        spec = self.spec
        bins = spec.amount
        key, pix = self._take()
        if self._binning is Binning.N_TIME_BINS:
            if not len(key):
                return self._zeros(bins)
            order = np.argsort(key, kind="stable")
            times, pix = key[order], pix[order]
            # tonic's SliceByTimeBins, term for term
            window = (times[-1] - times[0]) // bins * (1 + spec.overlap)
            stride = window * (1 - spec.overlap)
            starts = np.arange(bins) * stride + times[0]
            lo = np.searchsorted(times, starts)
            hi = np.searchsorted(times, starts + window)
        else:
            n = len(pix)
            # tonic's SliceByEventBins, term for term (array order, not time order)
            spike_count = int(n // bins * (1 + spec.overlap))
            stride = int(spike_count * (1 - spec.overlap))
            lo = np.arange(bins) * stride
            hi = lo + spike_count
            starts = lo
        self._check_frames(bins)
        frames = self._count_ranges(lo, np.minimum(hi, len(pix)), pix, bins)
        self._next = bins
        return Binned(frames=frames, window_start=np.asarray(starts).astype(np.int64))

    # ---------------------------------------------------------------- plumbing

    def _hold(self, key: np.ndarray, pix: np.ndarray) -> None:
        if not len(key):
            return
        if self.max_events is not None and self._buffered + len(key) > self.max_events:
            raise BinningLimitError(
                f"binning would hold {self._buffered + len(key)} events, more than the "
                f"{self.max_events} allowed: close samples sooner, or use shorter windows",
                "max_buffered_events",
            )
        self._pending_key.append(key)
        self._pending_pix.append(pix)
        self._buffered += len(key)

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._pending_key:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(self._pending_key) == 1:
            key, pix = self._pending_key[0], self._pending_pix[0]
        else:
            key, pix = np.concatenate(self._pending_key), np.concatenate(self._pending_pix)
        self._pending_key, self._pending_pix, self._buffered = [], [], 0
        return key, pix

    def _put_back(self, key: np.ndarray, pix: np.ndarray) -> None:
        if len(key):
            self._pending_key, self._pending_pix, self._buffered = [key], [pix], len(key)

    def _check_frames(self, count: int) -> None:
        if self.max_frames is not None and count > self.max_frames:
            raise BinningLimitError(
                f"this packet spans {count} windows, more than the {self.max_frames} "
                "frames allowed per packet: send smaller packets, or use longer windows",
                "max_frames_per_packet",
            )

    def _count_into(self, window: int | np.ndarray, pix: np.ndarray, last: int = -1) -> None:
        """Add the events' counts to open window ``window`` (relative to next), or to
        each event's own window when ``window`` is an array whose largest is ``last``."""
        size = self._size
        needed = (window if isinstance(window, int) else last) + 1
        if needed > self._open_windows:
            self._check_frames(needed)
            grow = (needed - self._open_windows) * size * 8
            if self.max_bytes is not None and self.nbytes + grow > self.max_bytes:
                raise BinningLimitError(
                    f"binning would hold {self.nbytes + grow} bytes of open windows, more "
                    f"than the {self.max_bytes} allowed: use shorter windows or smaller frames",
                    "max_stream_bytes",
                )
            extra = np.zeros(needed * size - len(self._open), np.int64)
            self._open = np.concatenate([self._open, extra]) if len(self._open) else extra
            self._open_windows = needed
        # np.add.at on an int64 buffer costs no more than a bincount on small frames
        # and touches only the counted pixels of large ones.
        if isinstance(window, int):
            if len(pix):
                np.add.at(self._open[window * size : (window + 1) * size], pix, 1)
            return
        np.add.at(self._open, window * size + pix, 1)

    def _release(self, upto: int) -> Binned:
        """Emit the direct windows [next, upto) from their count buffers."""
        count = upto - self._next
        if count <= 0:
            return self._empty()
        self._check_frames(count)
        size = self._size
        have = min(count, self._open_windows)
        counts = self._open[: have * size]
        if count > have:
            counts = np.concatenate([counts, np.zeros((count - have) * size, np.int64)])
        frames = self._finish(counts, count)
        self._open = self._open[have * size :].copy()
        self._open_windows -= have
        assert self._origin is not None
        starts = self._origin + np.arange(self._next, upto, dtype=np.int64) * self._stride
        self._next = upto
        return Binned(frames=frames, window_start=starts)

    def _count_frames(self, frame: np.ndarray, pix: np.ndarray, count: int) -> np.ndarray:
        size = self._pixels.size
        flat = frame * size + pix
        counts = np.bincount(flat, minlength=count * size)
        return self._finish(counts, count)

    def _count_ranges(
        self, lo: np.ndarray, hi: np.ndarray, pix: np.ndarray, count: int
    ) -> np.ndarray:
        """Frame i counts pix[lo[i]:hi[i]] (ranges may overlap)."""
        lengths = np.maximum(np.asarray(hi) - np.asarray(lo), 0).astype(np.int64)
        total = int(lengths.sum())
        frame = np.repeat(np.arange(count, dtype=np.int64), lengths)
        offsets = np.cumsum(lengths) - lengths
        take = (
            np.arange(total, dtype=np.int64)
            - np.repeat(offsets, lengths)
            + np.repeat(np.asarray(lo, dtype=np.int64), lengths)
        )
        return self._count_frames(frame, pix[take], count)

    def _finish(self, counts: np.ndarray, count: int) -> np.ndarray:
        """Counts -> frames in one pass: saturated and cast straight into the output."""
        bits = self.spec.clip_bits
        if self.layout == "nhwc":
            out = np.empty(len(counts), np.uint8)
            np.minimum(counts, (1 << bits) - 1 if bits else 255, out=out, casting="unsafe")
            return out.reshape(count, *self._shape)
        out16 = np.empty(len(counts), np.int16)
        if bits:
            np.minimum(counts, (1 << bits) - 1, out=out16, casting="unsafe")
        else:
            out16[:] = counts  # wraps as tonic's int16 np.add.at does
        return out16.reshape(count, *self._shape)

    def _empty(self) -> Binned:
        dtype = np.uint8 if self.layout == "nhwc" else np.int16
        return Binned(np.zeros((0, *self._shape), dtype), np.zeros(0, np.int64))

    def _zeros(self, count: int) -> Binned:
        self._check_frames(count)
        dtype = np.uint8 if self.layout == "nhwc" else np.int16
        return Binned(np.zeros((count, *self._shape), dtype), np.zeros(count, np.int64))


def spec_frames(events: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One sample's program frames: uint8 (N, H, W, C), as the agent makes them live."""
    binner = SpecBinner(spec)
    first = binner.push(events).frames
    last = binner.flush().frames
    return last if not len(first) else np.concatenate([first, last])


@dataclass(frozen=True)
class ToFrames:
    """``spec`` as a tonic-style transform: events -> (T, P, H, W) int16 frames.

    Use it where ``tonic.transforms.ToFrame`` (with the CenterCrop, Downsample,
    MergePolarities and filters the spec names) would go, e.g. as the last
    member of a ``tonic.transforms.Compose``; its frames are what the program's
    agent makes from the same events."""

    spec: InputSpec

    def __call__(self, events: np.ndarray) -> np.ndarray:
        binner = SpecBinner(self.spec, layout="tonic")
        first = binner.push(events).frames
        last = binner.flush().frames
        return last if not len(first) else np.concatenate([first, last])
