"""An event-camera emulator: still images become DVS recordings, as N-MNIST was made.

N-MNIST was recorded by pointing an ATIS camera at digits on a monitor and
moving the camera in three saccades (a triangle, 100 ms each). Here the image
moves instead, sampled bilinearly on the sensor grid. Each pixel keeps the
log intensity at its last event; when the current log intensity differs from
it by the contrast threshold the pixel emits an event of that sign and moves
its reference one threshold towards the current value, then stays silent for
the refractory period. Optional background noise adds uniformly random events.

Everything is vectorized over a batch of images and pixels (the only Python
loop runs over time steps), and every random draw comes from a generator
seeded by ``(seed, image_id)``, so a recording depends only on its image, its
id and the seed, never on the batch it was made in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.types import EVENT_DTYPE

#: Image offsets (x, y) in pixels at the corners of the saccade triangle:
#: down-right, then left, then up-right back to the start.
LEVELS_PER_LOG_UNIT = 1024  # resolution of the integer log-intensity levels

NMNIST_SACCADES: tuple[tuple[float, float], ...] = ((3.0, 0.0), (6.0, 6.0), (0.0, 6.0))


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated camera sees and moves. Defaults give N-MNIST-like recordings."""

    sensor_width: int = 34
    sensor_height: int = 34
    image_size: int = 28  # the image is scaled into a square this many pixels wide
    saccade_us: int = 100_000
    step_us: int = 1_000  # time resolution of the simulation
    contrast_threshold: float = 0.3  # in natural-log intensity units
    refractory_us: int = 1_000
    log_offset: float = 0.2  # log(I + offset): keeps black finite, tames the dark halo
    noise_rate_hz: float = 0.0  # background events per pixel per second
    saccades: tuple[tuple[float, float], ...] = NMNIST_SACCADES

    def check(self) -> None:
        if self.image_size + _extent(self.saccades) > min(self.sensor_width, self.sensor_height):
            raise EventFormatError(
                f"an image of {self.image_size} px moved over {_extent(self.saccades)} px does "
                f"not fit a {self.sensor_width}x{self.sensor_height} sensor: shrink image_size"
            )
        if self.step_us <= 0 or self.saccade_us < self.step_us:
            raise EventFormatError("step_us must be positive and no longer than saccade_us")
        if self.contrast_threshold <= 0 or self.log_offset <= 0 or self.noise_rate_hz < 0:
            raise EventFormatError(
                "contrast_threshold and log_offset must be positive, noise_rate_hz >= 0"
            )

    @property
    def duration_us(self) -> int:
        return self.saccade_us * len(self.saccades)


def _extent(saccades: Sequence[tuple[float, float]]) -> float:
    points = np.asarray(saccades, dtype=np.float64)
    return float(max(points[:, 0].max() - min(0.0, points[:, 0].min()), points[:, 1].max()))


def image_offsets(config: EmulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Image offset (x, y) at each time step: eased motion along the saccade triangle."""
    corners = np.asarray(config.saccades, dtype=np.float64)
    steps = config.saccade_us // config.step_us
    ease = (1.0 - np.cos(np.pi * np.arange(steps) / steps)) / 2.0
    starts = corners
    ends = np.roll(corners, -1, axis=0)
    path = starts[:, None, :] + (ends - starts)[:, None, :] * ease[None, :, None]
    path = path.reshape(-1, 2)
    return path[:, 0], path[:, 1]


def _interpolation(n_out: int, n_in: int, scale: float, shift: float) -> np.ndarray:
    """(n_out, n_in) bilinear weights sampling n_in pixels, scaled and shifted, on n_out."""
    coord = (np.arange(n_out, dtype=np.float64) + 0.5 - shift) * (n_in / scale) - 0.5
    low = np.floor(coord).astype(np.int64)
    frac = coord - low
    weights = np.zeros((n_out, n_in + 2))  # one zero column each side: black outside
    rows = np.arange(n_out)
    weights[rows, np.clip(low + 1, 0, n_in + 1)] += 1 - frac
    weights[rows, np.clip(low + 2, 0, n_in + 1)] += frac
    return weights[:, 1:-1]


def _render(images: np.ndarray, config: EmulatorConfig, dx: float, dy: float) -> np.ndarray:
    """Intensity on the sensor grid of images (B, h, w) shifted by (dx, dy); zero outside.

    Bilinear sampling is separable, so it is two matrix products per step.
    """
    count, h, w = images.shape
    extent = _extent(config.saccades)
    margin_x = (config.sensor_width - config.image_size - extent) / 2.0
    margin_y = (config.sensor_height - config.image_size - extent) / 2.0
    along_x = _interpolation(config.sensor_width, w, config.image_size, margin_x + dx)
    along_y = _interpolation(config.sensor_height, h, config.image_size, margin_y + dy)
    wide = (images.reshape(count * h, w) @ along_x.T).reshape(count, h, config.sensor_width)
    tall = wide.transpose(0, 2, 1).reshape(count * config.sensor_width, h) @ along_y.T
    return tall.reshape(count, config.sensor_width, config.sensor_height).transpose(0, 2, 1)


def emulate_saccades(
    images: np.ndarray,
    *,
    seed: int = 0,
    image_ids: Sequence[int] | None = None,
    config: EmulatorConfig | None = None,
) -> list[np.ndarray]:
    """Record a batch of grayscale images (B, h, w), values in [0, 1], as DVS events.

    Returns one time-sorted ``EVENT_DTYPE`` array per image. ``image_ids`` (default
    0..B-1) seed each image's random draws together with ``seed``.
    """
    config = config or EmulatorConfig()
    config.check()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[1] < 1 or images.shape[2] < 1:
        raise EventFormatError(f"images must have shape (B, height, width), got {images.shape}")
    if images.size and (images.min() < 0 or images.max() > 1 or not np.isfinite(images).all()):
        raise EventFormatError("image values must lie in [0, 1]: divide by the maximum first")
    ids = list(range(len(images))) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != len(images):
        raise EventFormatError(f"{len(ids)} image_ids for {len(images)} images")

    offsets_x, offsets_y = image_offsets(config)
    threshold = round(config.contrast_threshold * LEVELS_PER_LOG_UNIT)
    reference = _log_level(_render(images, config, offsets_x[0], offsets_y[0]), config)
    ready_at = np.zeros(reference.shape, dtype=np.int64)
    found: list[tuple[np.ndarray, ...]] = []
    for step in range(1, len(offsets_x)):
        now = step * config.step_us
        change = _log_level(_render(images, config, offsets_x[step], offsets_y[step]), config)
        change -= reference
        fire = np.abs(change) >= threshold
        fire &= ready_at <= now
        where = np.nonzero(fire)
        if len(where[0]) == 0:
            continue
        on_step = change[where] > 0
        reference[where] += np.where(on_step, threshold, -threshold)
        ready_at[where] = now + config.refractory_us
        found.append((*where, np.full(len(on_step), now, np.int64), on_step))

    b, y, x, t, on = (
        [np.concatenate(c) for c in zip(*found, strict=True)]
        if found
        else [np.zeros(0, np.int64)] * 5
    )
    order = np.argsort(b, kind="stable")  # keeps each image's events in time order
    bounds = np.searchsorted(b[order], np.arange(len(images) + 1))
    recordings = []
    for i, image_id in enumerate(ids):
        mine = order[bounds[i] : bounds[i + 1]]
        signal = np.empty(len(mine), dtype=EVENT_DTYPE)
        signal["x"], signal["y"], signal["t"], signal["p"] = x[mine], y[mine], t[mine], on[mine]
        noise = _noise(np.random.default_rng([seed, image_id]), config)
        events = np.concatenate([signal, noise])
        recordings.append(events[np.argsort(events["t"], kind="stable")])
    return recordings


def _log_level(intensity: np.ndarray, config: EmulatorConfig) -> np.ndarray:
    """Log intensity as integer levels: exact arithmetic from here on, so no
    floating-point accumulation can move an event between runs."""
    level = np.log(intensity + config.log_offset)
    level *= LEVELS_PER_LOG_UNIT
    return np.rint(level).astype(np.int32)


def _noise(rng: np.random.Generator, config: EmulatorConfig) -> np.ndarray:
    pixels = config.sensor_width * config.sensor_height
    n = int(rng.poisson(config.noise_rate_hz * pixels * config.duration_us * 1e-6))
    noise = np.empty(n, dtype=EVENT_DTYPE)
    noise["x"] = rng.integers(0, config.sensor_width, n)
    noise["y"] = rng.integers(0, config.sensor_height, n)
    noise["t"] = rng.integers(0, config.duration_us, n)
    noise["p"] = rng.random(n) < 0.5
    return noise
