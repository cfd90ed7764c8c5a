"""The event-camera emulator: DVS behaviour, determinism, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from spikefleet.errors import EventFormatError
from spikefleet.events.emulator import EmulatorConfig, emulate_saccades


def square(size: int = 8, inner: tuple[int, int] = (2, 6)) -> np.ndarray:
    image = np.zeros((size, size))
    image[inner[0] : inner[1], inner[0] : inner[1]] = 1.0
    return image


def test_same_seed_same_events_and_batch_does_not_matter():
    images = np.stack([square(), square(inner=(1, 4))])
    config = EmulatorConfig(noise_rate_hz=2.0)
    first = emulate_saccades(images, seed=7, config=config)
    again = emulate_saccades(images, seed=7, config=config)
    alone = emulate_saccades(images[1:], seed=7, image_ids=[1], config=config)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[1], alone[0])
    other_seed = emulate_saccades(images, seed=8, config=config)
    assert not np.array_equal(first[0], other_seed[0])


def test_events_are_sorted_inside_the_sensor_and_the_recording():
    config = EmulatorConfig(noise_rate_hz=5.0)
    (events,) = emulate_saccades(square()[None], config=config)
    assert len(events) > 100
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["t"].min() >= 0 and events["t"].max() < config.duration_us
    assert events["x"].min() >= 0 and events["x"].max() < 34
    assert events["y"].min() >= 0 and events["y"].max() < 34


def test_a_bright_object_moving_right_turns_on_ahead_and_off_behind():
    # The first saccade moves the image right (and down): brightness rises on its
    # right edge (ON events) and falls on its left edge (OFF events).
    (events,) = emulate_saccades(square()[None])
    first = events[events["t"] < 100_000]
    on, off = first[first["p"]], first[~first["p"]]
    assert len(on) > 20 and len(off) > 20
    assert on["x"].mean() > off["x"].mean() + 3


def test_a_still_blank_scene_makes_no_events_without_noise():
    (events,) = emulate_saccades(np.zeros((1, 8, 8)))
    assert len(events) == 0


def test_refractory_period_spaces_each_pixels_events():
    config = EmulatorConfig(refractory_us=5_000, contrast_threshold=0.05)
    (events,) = emulate_saccades(square()[None], config=config)
    pixel = events["y"].astype(np.int64) * 34 + events["x"]
    order = np.lexsort((events["t"], pixel))
    same_pixel = np.diff(pixel[order]) == 0
    gaps = np.diff(events["t"][order])[same_pixel]
    assert len(gaps) > 0 and gaps.min() >= 5_000


def test_a_lower_contrast_threshold_gives_more_events():
    image = square()[None]
    coarse = emulate_saccades(image, config=EmulatorConfig(contrast_threshold=0.6))[0]
    fine = emulate_saccades(image, config=EmulatorConfig(contrast_threshold=0.15))[0]
    assert len(fine) > 2 * len(coarse) > 0


def test_background_noise_has_the_requested_rate():
    config = EmulatorConfig(noise_rate_hz=10.0)
    (events,) = emulate_saccades(np.zeros((1, 8, 8)), config=config)
    expected = 10.0 * 34 * 34 * config.duration_us * 1e-6
    assert abs(len(events) - expected) < 5 * np.sqrt(expected)
    assert 0.4 < events["p"].mean() < 0.6


def test_bad_input_is_named():
    with pytest.raises(EventFormatError, match=r"\[0, 1\]"):
        emulate_saccades(np.full((1, 8, 8), 16.0))
    with pytest.raises(EventFormatError, match="shape"):
        emulate_saccades(np.zeros((8, 8)))
    with pytest.raises(EventFormatError, match="does not fit"):
        emulate_saccades(np.zeros((1, 8, 8)), config=EmulatorConfig(image_size=33))
    with pytest.raises(EventFormatError, match="image_ids"):
        emulate_saccades(np.zeros((2, 8, 8)), image_ids=[0])
