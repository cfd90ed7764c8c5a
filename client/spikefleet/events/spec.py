"""InputSpec: how events become a program's input frames, and how frames become an answer.

A program carries its spec so that training, conversion, ``spikefleet run`` and
the agent's live binning all make the same frames from the same events. The
file form (JSON or TOML) uses tonic's own names and units where tonic has them:
the keys of ``tonic.transforms.ToFrame`` (``sensor_size``, ``time_window``,
``event_count``, ``n_time_bins``, ``n_event_bins``, ``overlap``,
``include_incomplete``, ``start_time``, ``end_time``; times in microseconds).
A file holding only those keys is a valid spec. Keys of spikefleet's own cover
what ToFrame lacks: ``window_start``, ``crop``/``center_crop``,
``downsample``, ``polarity``, ``clip_bits``, ``denoise_filter_time``,
``refractory_delta``, ``decision``, ``rolling_frames`` and
``allow_stream_override``.

``sensor_size`` is the recording's sensor (W, H, P), as tonic datasets give
it. Events pass, in this order: the filters (tonic's ``Denoise`` and
``RefractoryPeriod``, on sensor coordinates), the crop box (tonic's
``CenterCrop`` when centred), the integer downsample (tonic's ``Downsample``
with ``spatial_factor=1/k``), polarity merging (tonic's ``MergePolarities``),
then ToFrame on the resulting :attr:`InputSpec.frame_size`.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from spikefleet.errors import SpikefleetError

MAX_SENSOR_SIDE = 32768  # event x/y are int16


class InputSpecError(SpikefleetError):
    """An input spec (or its file) is malformed or inconsistent with a program."""


class Binning(StrEnum):
    """How the event stream is cut into frames (the ToFrame parameter that is set)."""

    TIME_WINDOW = "time_window"  # fixed windows of ``time_window`` us
    EVENT_COUNT = "event_count"  # fixed groups of ``event_count`` events
    N_TIME_BINS = "n_time_bins"  # a fixed number of frames per sample, by time
    N_EVENT_BINS = "n_event_bins"  # a fixed number of frames per sample, by events


class WindowStart(StrEnum):
    """Where the first time window starts (time windows only)."""

    FIRST_EVENT = "first_event"  # tonic's default: the sample's (or stream's) first event
    START_TIME = "start_time"  # at ``start_time`` (0: the sample's own start)
    ABSOLUTE = "absolute"  # at multiples of the window stride since t = 0 (live streams)


class Polarity(StrEnum):
    SPLIT = "split"  # two channels: OFF in channel 0, ON in channel 1 (tonic's p index)
    MERGED = "merged"  # one channel counting both (tonic's MergePolarities)


class Decision(StrEnum):
    """How per-frame outputs become an answer."""

    SAMPLE_SUM = "sample_sum"  # the argmax of the outputs summed over a sample's frames
    PER_FRAME = "per_frame"  # every frame is its own answer
    ROLLING_SUM = "rolling_sum"  # the argmax of the outputs summed over the last K frames


@dataclass(frozen=True)
class CropBox:
    """A crop box on the sensor: pixels x..x+width-1, y..y+height-1 are kept, shifted to 0."""

    x: int
    y: int
    width: int
    height: int


_TONIC_KEYS = (
    "sensor_size",
    "time_window",
    "event_count",
    "n_time_bins",
    "n_event_bins",
    "overlap",
    "include_incomplete",
    "start_time",
    "end_time",
)
_OWN_KEYS = (
    "window_start",
    "crop",
    "center_crop",
    "downsample",
    "polarity",
    "clip_bits",
    "denoise_filter_time",
    "refractory_delta",
    "decision",
    "rolling_frames",
    "allow_stream_override",
)
KEYS = _TONIC_KEYS + _OWN_KEYS
_BINNING_KEYS = tuple(b.value for b in Binning)


def _int(value: Any, key: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputSpecError(f"input spec: {key} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InputSpecError(f"input spec: {key} must be a whole number, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise InputSpecError(f"input spec: {key} must be >= {minimum}, got {value}")
    return int(value)


def _pair(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        n = _int(value, key, minimum=1)
        return n, n
    if isinstance(value, list | tuple) and len(value) == 2:
        return _int(value[0], key, minimum=1), _int(value[1], key, minimum=1)
    raise InputSpecError(f"input spec: {key} must be an integer or [x, y], got {value!r}")


def _member(enum: type[StrEnum], value: Any, key: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum)
        raise InputSpecError(f"input spec: {key} must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True)
class InputSpec:
    """How events become this program's frames, and how frames become an answer.

    Exactly one of ``time_window`` (us), ``event_count``, ``n_time_bins`` or
    ``n_event_bins`` is set, with the meaning tonic's ToFrame gives it; so are
    ``overlap``, ``include_incomplete``, ``start_time`` and ``end_time``.
    ``clip_bits`` saturates counts at ``2**clip_bits - 1`` (None: tonic's raw
    int16 counts; a program records its input bits). Filters are off when None.
    """

    sensor_size: tuple[int, int, int]
    time_window: int | None = None
    event_count: int | None = None
    n_time_bins: int | None = None
    n_event_bins: int | None = None
    overlap: float = 0
    include_incomplete: bool = False
    start_time: int | None = None
    end_time: int | None = None
    window_start: WindowStart | None = None  # None: START_TIME with start_time, else FIRST_EVENT
    crop: CropBox | None = None
    downsample: tuple[int, int] = (1, 1)
    polarity: Polarity | None = None  # None: SPLIT for a 2-polarity sensor, MERGED for 1
    clip_bits: int | None = None
    denoise_filter_time: int | None = None
    refractory_delta: int | None = None
    decision: Decision = Decision.SAMPLE_SUM
    rolling_frames: int = 0
    allow_stream_override: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            width, height, polarities = (int(v) for v in self.sensor_size)
        except (TypeError, ValueError):
            raise InputSpecError(
                f"input spec: sensor_size must be [width, height, polarities], "
                f"got {self.sensor_size!r}"
            ) from None
        if not (0 < width <= MAX_SENSOR_SIDE and 0 < height <= MAX_SENSOR_SIDE):
            raise InputSpecError(
                f"input spec: sensor_size {width}x{height} is out of range "
                f"(each side 1..{MAX_SENSOR_SIDE})"
            )
        if polarities not in (1, 2):
            raise InputSpecError(
                f"input spec: sensor_size's polarities must be 1 or 2, got {polarities}"
            )
        set_(self, "sensor_size", (width, height, polarities))
        chosen = [k for k in _BINNING_KEYS if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise InputSpecError(
                "input spec: set exactly one of time_window, event_count, n_time_bins, "
                f"n_event_bins (as tonic's ToFrame takes them); got {chosen or 'none'}"
            )
        key = chosen[0]
        amount = _int(getattr(self, key), key, minimum=1)
        set_(self, key, amount)
        binning = Binning(key)
        overlap = self.overlap
        if isinstance(overlap, bool) or not isinstance(overlap, int | float):
            raise InputSpecError(f"input spec: overlap must be a number, got {overlap!r}")
        if not math.isfinite(overlap) or overlap < 0:
            raise InputSpecError(f"input spec: overlap must be >= 0, got {overlap!r}")
        if binning in (Binning.N_TIME_BINS, Binning.N_EVENT_BINS):
            if overlap >= 1:
                raise InputSpecError(
                    f"input spec: with {key}, overlap is a fraction of a bin and must be < 1, "
                    f"got {overlap}"
                )
            if self.include_incomplete:
                raise InputSpecError(
                    f"input spec: include_incomplete is not valid with {key} (as in tonic)"
                )
        else:
            if overlap >= amount:
                raise InputSpecError(
                    f"input spec: overlap ({overlap}) must be smaller than {key} ({amount})"
                )
            unit = "microseconds" if binning is Binning.TIME_WINDOW else "events"
            set_(self, "overlap", _int(overlap, f"overlap (whole {unit})", minimum=0))
        if not isinstance(self.include_incomplete, bool):
            raise InputSpecError("input spec: include_incomplete must be true or false")
        for name in ("start_time", "end_time"):
            value = getattr(self, name)
            if value is not None:
                if binning is not Binning.TIME_WINDOW:
                    raise InputSpecError(
                        f"input spec: {name} applies to time_window binning only (as in tonic)"
                    )
                set_(self, name, _int(value, name))
        start = self.window_start
        if start is None:
            start = WindowStart.FIRST_EVENT if self.start_time is None else WindowStart.START_TIME
        start = _member(WindowStart, start, "window_start")
        if start is not WindowStart.FIRST_EVENT and binning is not Binning.TIME_WINDOW:
            raise InputSpecError(
                f"input spec: window_start {start.value!r} applies to time_window binning only"
            )
        if start is WindowStart.START_TIME and self.start_time is None:
            set_(self, "start_time", 0)
        if start is not WindowStart.START_TIME and self.start_time is not None:
            raise InputSpecError(
                f"input spec: start_time is set but window_start is {start.value!r}; "
                "drop one of them"
            )
        if (
            self.end_time is not None
            and self.start_time is not None
            and self.end_time < self.start_time
        ):
            raise InputSpecError("input spec: end_time lies before start_time")
        set_(self, "window_start", start)
        crop = self.crop
        if crop is not None:
            box = CropBox(
                _int(crop.x, "crop x", minimum=0),
                _int(crop.y, "crop y", minimum=0),
                _int(crop.width, "crop width", minimum=1),
                _int(crop.height, "crop height", minimum=1),
            )
            if box.x + box.width > width or box.y + box.height > height:
                raise InputSpecError(
                    f"input spec: crop box {box.width}x{box.height} at ({box.x}, {box.y}) "
                    f"does not fit the {width}x{height} sensor"
                )
            set_(self, "crop", box)
        set_(self, "downsample", _pair(self.downsample, "downsample"))
        polarity = self.polarity
        if polarity is None:
            polarity = Polarity.SPLIT if polarities == 2 else Polarity.MERGED
        polarity = _member(Polarity, polarity, "polarity")
        if polarity is Polarity.SPLIT and polarities == 1:
            raise InputSpecError(
                "input spec: polarity 'split' needs a 2-polarity sensor (sensor_size [W, H, 2])"
            )
        set_(self, "polarity", polarity)
        if self.clip_bits is not None:
            bits = _int(self.clip_bits, "clip_bits")
            if not 1 <= bits <= 8:
                raise InputSpecError(f"input spec: clip_bits must lie in 1..8, got {bits}")
            set_(self, "clip_bits", bits)
        if self.denoise_filter_time is not None:
            set_(
                self,
                "denoise_filter_time",
                _int(self.denoise_filter_time, "denoise_filter_time", minimum=1),
            )
        if self.refractory_delta is not None:
            set_(
                self, "refractory_delta", _int(self.refractory_delta, "refractory_delta", minimum=0)
            )
        decision = _member(Decision, self.decision, "decision")
        set_(self, "decision", decision)
        rolling = _int(self.rolling_frames, "rolling_frames", minimum=0)
        if (decision is Decision.ROLLING_SUM) != (rolling > 0):
            raise InputSpecError(
                "input spec: rolling_frames (K > 0) goes with decision 'rolling_sum', and only "
                f"with it (got decision {decision.value!r}, rolling_frames {rolling})"
            )
        set_(self, "rolling_frames", rolling)
        if not isinstance(self.allow_stream_override, bool):
            raise InputSpecError("input spec: allow_stream_override must be true or false")

    # ---------------------------------------------------------------- derived

    @property
    def binning(self) -> Binning:
        return next(Binning(k) for k in _BINNING_KEYS if getattr(self, k) is not None)

    @property
    def amount(self) -> int:
        """The set binning parameter: us, events, or bins."""
        value = getattr(self, self.binning.value)
        assert isinstance(value, int)
        return value

    @property
    def channels(self) -> int:
        return 2 if self.polarity is Polarity.SPLIT else 1

    @property
    def frame_size(self) -> tuple[int, int, int]:
        """(W, H, P) after crop and downsample: the ``sensor_size`` tonic's ToFrame takes."""
        width, height, _ = self.sensor_size
        if self.crop is not None:
            width, height = self.crop.width, self.crop.height
        kx, ky = self.downsample
        return -(-width // kx), -(-height // ky), self.channels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C): the program input these frames feed."""
        width, height, channels = self.frame_size
        return height, width, channels

    @property
    def per_sample_only(self) -> bool:
        """Bins per sample need the whole sample: they cannot bin a stream without samples."""
        return self.binning in (Binning.N_TIME_BINS, Binning.N_EVENT_BINS)

    def with_clip_bits(self, bits: int) -> InputSpec:
        return replace(self, clip_bits=bits)

    # ---------------------------------------------------------------- file form

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Build a spec from its file form; unknown keys are refused by name."""
        if not isinstance(data, Mapping):
            raise InputSpecError(f"input spec must be a table/object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise InputSpecError(
                f"input spec: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(KEYS)}"
            )
        if "sensor_size" not in data:
            raise InputSpecError(
                "input spec: sensor_size ([width, height, polarities]) is required"
            )
        if "crop" in data and "center_crop" in data:
            raise InputSpecError("input spec: give crop or center_crop, not both")
        sensor = data["sensor_size"]
        if not isinstance(sensor, list | tuple) or len(sensor) != 3:
            raise InputSpecError(
                f"input spec: sensor_size must be [width, height, polarities], got {sensor!r}"
            )
        kwargs: dict[str, Any] = {
            k: data[k] for k in KEYS if k in data and k not in ("crop", "center_crop")
        }
        kwargs["sensor_size"] = tuple(_int(v, "sensor_size") for v in sensor)
        if "crop" in data:
            box = data["crop"]
            if isinstance(box, Mapping):
                box = [box.get(k) for k in ("x", "y", "width", "height")]
            if not isinstance(box, list | tuple) or len(box) != 4:
                raise InputSpecError(
                    f"input spec: crop must be [x, y, width, height], got {data['crop']!r}"
                )
            kwargs["crop"] = CropBox(*(_int(v, "crop") for v in box))
        if "center_crop" in data:
            kwargs["crop"] = center_crop(kwargs["sensor_size"], data["center_crop"])
        if "downsample" in data:
            kwargs["downsample"] = _pair(data["downsample"], "downsample")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The file form: tonic's ToFrame keys first, then spikefleet's own; no None values."""
        out: dict[str, Any] = {"sensor_size": list(self.sensor_size)}
        out[self.binning.value] = self.amount
        if self.overlap:
            out["overlap"] = self.overlap
        out["include_incomplete"] = self.include_incomplete
        for name in ("start_time", "end_time"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        assert self.window_start is not None and self.polarity is not None
        out["window_start"] = self.window_start.value
        if self.crop is not None:
            out["crop"] = [self.crop.x, self.crop.y, self.crop.width, self.crop.height]
        if self.downsample != (1, 1):
            kx, ky = self.downsample
            out["downsample"] = kx if kx == ky else [kx, ky]
        out["polarity"] = self.polarity.value
        for name in ("clip_bits", "denoise_filter_time", "refractory_delta"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["decision"] = self.decision.value
        if self.rolling_frames:
            out["rolling_frames"] = self.rolling_frames
        out["allow_stream_override"] = self.allow_stream_override
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_toml(self) -> str:
        lines = []
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars/arrays are valid TOML
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        """One line for humans (``spikefleet inspect``)."""
        parts = [f"sensor {self.sensor_size[0]}x{self.sensor_size[1]}x{self.sensor_size[2]}"]
        if self.denoise_filter_time is not None:
            parts.append(f"denoise {self.denoise_filter_time} us")
        if self.refractory_delta is not None:
            parts.append(f"refractory {self.refractory_delta} us")
        if self.crop is not None:
            c = self.crop
            parts.append(f"crop {c.width}x{c.height}@({c.x},{c.y})")
        if self.downsample != (1, 1):
            parts.append(f"downsample {self.downsample[0]}x{self.downsample[1]}")
        assert self.polarity is not None and self.window_start is not None
        parts.append(f"polarity {self.polarity.value}")
        unit = {"time_window": " us", "event_count": " events"}.get(self.binning.value, "")
        binning = f"{self.binning.value} {self.amount}{unit}"
        if self.overlap:
            binning += f" overlap {self.overlap}"
        parts.append(binning)
        if self.binning is Binning.TIME_WINDOW:
            start = self.window_start.value
            if self.window_start is WindowStart.START_TIME:
                start = f"start_time {self.start_time}"
            parts.append(f"from {start}")
            if self.end_time is not None:
                parts.append(f"to {self.end_time}")
        if self.binning in (Binning.TIME_WINDOW, Binning.EVENT_COUNT):
            parts.append("incomplete kept" if self.include_incomplete else "incomplete dropped")
        parts.append(f"clip {self.clip_bits} bits" if self.clip_bits else "no clip")
        decision = self.decision.value
        if self.decision is Decision.ROLLING_SUM:
            decision += f" K={self.rolling_frames}"
        parts.append(f"decision {decision}")
        if self.allow_stream_override:
            parts.append("stream override allowed")
        frame_w, frame_h, frame_c = self.frame_size
        parts.append(f"-> frames {frame_h}x{frame_w}x{frame_c}")
        return ", ".join(parts)


def center_crop(sensor_size: tuple[int, int, int], size: Any) -> CropBox:
    """tonic's CenterCrop box: ``size`` is [width, height] (or one int for a square)."""
    width, height = _pair(size, "center_crop")
    sensor_w, sensor_h = int(sensor_size[0]), int(sensor_size[1])
    if width > sensor_w or height > sensor_h:
        raise InputSpecError(
            f"input spec: center_crop {width}x{height} is larger than the "
            f"{sensor_w}x{sensor_h} sensor (padding is not supported)"
        )
    return CropBox((sensor_w - width) // 2, (sensor_h - height) // 2, width, height)


def load_input_spec(path: str | Path) -> InputSpec:
    """Read a spec file: ``.toml``, or JSON (``.json`` or anything else)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputSpecError(f"cannot read input spec {path}: {exc}") from None
    return parse_input_spec(text, toml=path.suffix.lower() == ".toml", source=str(path))


def parse_input_spec(text: str, *, toml: bool = False, source: str = "input spec") -> InputSpec:
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        kind = "TOML" if toml else "JSON"
        raise InputSpecError(f"{source}: not valid {kind} ({exc})") from None
    try:
        return InputSpec.from_dict(data)
    except InputSpecError as exc:
        raise InputSpecError(f"{source}: {exc}") from None
    except TypeError as exc:  # a key's value of the wrong shape
        raise InputSpecError(f"{source}: {exc}") from None


DEFAULT_TIME_WINDOW_US = 10_000


def default_input_spec(input_shape: tuple[int, int, int], bits: int) -> InputSpec:
    """The spec of a program that records none (programs converted before specs existed).

    The program's input is the whole sensor; 10 ms windows from the first
    event, incomplete windows dropped, empty windows kept, counts clipped to
    the input bits, answers summed per sample, and streams may override the
    window and sensor size (as they could before).
    """
    height, width, channels = (int(v) for v in input_shape)
    return InputSpec(
        sensor_size=(width, height, channels),
        time_window=DEFAULT_TIME_WINDOW_US,
        clip_bits=int(bits),
        allow_stream_override=True,
    )


def spec_fields() -> list[str]:
    return [f.name for f in fields(InputSpec) if not f.name.startswith("_")]
