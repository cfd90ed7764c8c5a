"""N-DIGITS: scikit-learn's handwritten digits recorded by the event-camera emulator.

No machine here reaches the internet, so N-MNIST cannot be fetched. N-DIGITS
is the stand-in: the 1,797 8x8 digits scikit-learn ships, scaled to 12x12 in a
34x34 field and moved in N-MNIST's three saccades (scaled with the digit),
one saccade per 100 ms, written as N-MNIST .bin
files plus ``index.json`` (label, split, sha256 per file). The same seed gives
the same bytes, which the index records and :func:`load` checks.

:data:`INPUT_SPEC` is how a sample becomes network input, an ordinary input
spec (tonic's ``ToFrame(time_window=100000, start_time=0, end_time=300000)``,
clipped to 4 bits); :func:`sample_frames` applies it, and the reference
program carries it, so the agent bins live events the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from spikefleet.errors import DatasetError
from spikefleet.events.binning import spec_frames
from spikefleet.events.emulator import NMNIST_SACCADES, EmulatorConfig, emulate_saccades
from spikefleet.events.nmnist import read_nmnist, write_nmnist
from spikefleet.events.spec import Decision, InputSpec

NAME = "ndigits"
FORMAT_VERSION = 1
DEFAULT_SEED = 0
SENSOR_SIZE = (34, 34, 2)
INPUT_BITS = 4
TEST_FRACTION = 0.2
#: Digits are drawn 12 px wide, not N-MNIST's 28: the reference network's
#: convolutions see 7x7-pixel neighbourhoods, and at 12 px a neighbourhood
#: holds a useful part of a digit (measured with the first, globally pooled
#: reference network: 28 px gave 85.5% test accuracy after 20 epochs, 12 px
#: 87.7%). The saccades shrink with the digit. Background activity: about 170
#: noise events per 300 ms recording.
DIGIT_SIZE = 12
CONFIG = EmulatorConfig(
    image_size=DIGIT_SIZE,
    saccades=tuple((x * 0.43, y * 0.43) for x, y in NMNIST_SACCADES),
    noise_rate_hz=0.5,
)
FRAMES_PER_SAMPLE = len(CONFIG.saccades)
#: One 100 ms frame per saccade from the sample's start, 4-bit counts, answers
#: summed over the sample's frames.
INPUT_SPEC = InputSpec(
    sensor_size=SENSOR_SIZE,
    time_window=CONFIG.saccade_us,
    start_time=0,
    end_time=CONFIG.saccade_us * FRAMES_PER_SAMPLE,
    clip_bits=INPUT_BITS,
    decision=Decision.SAMPLE_SUM,
)
SPLITS = ("train", "test")
SIZE = 1797  # digits in scikit-learn's set
_BATCH = 256


class Sample(NamedTuple):
    events: np.ndarray  # EVENT_DTYPE, time-sorted
    label: int


def default_root() -> Path:
    """``$SPIKEFLEET_DATA/ndigits`` if set, else ``~/.cache/spikefleet/ndigits``."""
    base = os.environ.get("SPIKEFLEET_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "spikefleet") / NAME


def sample_frames(events: np.ndarray) -> np.ndarray:
    """The network input for one recording: uint8 (3, 34, 34, 2), 4-bit.

    One frame per saccade (0-100, 100-200, 200-300 ms; the emulator records
    nothing later): per pixel, OFF and ON event counts clipped to 15, made by
    :data:`INPUT_SPEC`.

    Why: a frame per saccade keeps each frame's edges sharp and their polarity
    tied to one motion direction, which makes the convolutions' local features
    far more telling than one frame of the whole recording (measured on
    N-DIGITS with the first reference network, which pooled conv2 globally:
    87.7% vs 66% test accuracy; the shipped network does not pool, see
    :mod:`spikefleet.reference.model`). A sample's class is the argmax of
    the network's output summed over its frames (:func:`predict_sample`).
    """
    frames = spec_frames(events, INPUT_SPEC)
    if len(frames) != FRAMES_PER_SAMPLE:  # no event at all: tonic's one empty frame
        frames = np.zeros((FRAMES_PER_SAMPLE, *INPUT_SPEC.input_shape), np.uint8)
    return frames


def predict_sample(frame_scores: np.ndarray) -> int:
    """A sample's class from the (n_frames, 10) class scores of its frames."""
    return int(np.asarray(frame_scores).reshape(-1, 10).sum(axis=0).argmax())


def split_indices(labels: np.ndarray, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """A fixed stratified split: 20% of each digit class is the test set."""
    rng = np.random.default_rng([seed, 0x5EED])
    test: list[np.ndarray] = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        test.append(rng.permutation(members)[: round(len(members) * TEST_FRACTION)])
    test_set = np.sort(np.concatenate(test))
    train_set = np.setdiff1d(np.arange(len(labels)), test_set)
    return {"train": train_set, "test": test_set}


def _digits(limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError(
            "building N-DIGITS needs scikit-learn: pip install 'spikefleet[data]'"
        ) from None
    digits = load_digits()
    images = digits.images / 16.0
    labels = digits.target.astype(np.int64)
    return (images, labels) if limit is None else (images[:limit], labels[:limit])


def build(
    root: str | os.PathLike[str] | None = None,
    *,
    seed: int = DEFAULT_SEED,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Record N-DIGITS into ``root`` (default :func:`default_root`) and return it.

    ``limit`` builds only the first N digits (for tests). ``progress(done, total)``
    is called after each batch. Existing files are overwritten.
    """
    root = Path(root) if root is not None else default_root()
    images, labels = _digits(limit)
    splits = split_indices(_digits(None)[1], seed)
    split_of = {int(i): name for name, members in splits.items() for i in members}
    for name in SPLITS:
        (root / name).mkdir(parents=True, exist_ok=True)
    entries = []
    for start in range(0, len(images), _BATCH):
        ids = list(range(start, min(start + _BATCH, len(images))))
        for i, events in zip(
            ids, emulate_saccades(images[ids], seed=seed, image_ids=ids, config=CONFIG), strict=True
        ):
            relative = f"{split_of[i]}/{i:04d}.bin"
            write_nmnist(root / relative, events)
            digest = hashlib.sha256((root / relative).read_bytes()).hexdigest()
            entries.append(
                {"file": relative, "label": int(labels[i]), "split": split_of[i], "sha256": digest}
            )
        if progress is not None:
            progress(ids[-1] + 1, len(images))
    index = {
        "name": NAME,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "emulator": asdict(CONFIG),
        "sensor_size": list(SENSOR_SIZE),
        "samples": entries,
    }
    (root / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return root


def read_index(root: str | os.PathLike[str] | None = None) -> dict:
    root = Path(root) if root is not None else default_root()
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"N-DIGITS is not built at {root}: run `spikefleet data ndigits --root {root}`"
        ) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{root}/index.json is corrupt ({exc}): rebuild N-DIGITS") from None
    if index.get("name") != NAME or index.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{root}/index.json is not an N-DIGITS v{FORMAT_VERSION} index")
    return index


def load(
    root: str | os.PathLike[str] | None = None, split: str = "train", *, verify: bool = True
) -> list[Sample]:
    """The samples of one split, in index order; ``verify`` checks every file's sha256."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    root = Path(root) if root is not None else default_root()
    samples = []
    for entry in read_index(root)["samples"]:
        if entry["split"] != split:
            continue
        path = root / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing: rebuild N-DIGITS") from None
        if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DatasetError(f"{path} does not match its sha256 in index.json: rebuild N-DIGITS")
        samples.append(Sample(read_nmnist(path), int(entry["label"])))
    return samples


def load_frames(
    root: str | os.PathLike[str] | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """All frames of a split, uint8 (S, 3, 34, 34, 2) (see :func:`sample_frames`), and labels."""
    samples = load(root, split)
    frames = np.zeros((len(samples), FRAMES_PER_SAMPLE, 34, 34, 2), np.uint8)
    for i, sample in enumerate(samples):
        frames[i] = sample_frames(sample.events)
    return frames, np.array([s.label for s in samples], dtype=np.int64)
