"""Calibration data for the CLI: frames (and labels when the source has them).

Accepted: an N-DIGITS root (``index.json``; one split), a directory of
N-MNIST recordings in class folders (``DIR/<label>/*.bin``), a ``.npz`` with
``frames`` (and optionally ``labels``), or a ``.npy`` of frames. Recordings
become frames by the model's input spec when one is given (the same code the
agent bins live events with), else by the N-DIGITS spec
(``spikefleet.datasets.ndigits.sample_frames``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikefleet.errors import ConversionError
from spikefleet.events.spec import InputSpec


def load_calibration(
    path: str | os.PathLike[str],
    *,
    split: str = "test",
    limit: int | None = None,
    input_spec: InputSpec | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    source = Path(path)
    labels: np.ndarray | None = None
    if source.is_dir() and (source / "index.json").exists():
        from spikefleet.datasets import ndigits

        frames, labels = ndigits.load_frames(source, split)
    elif source.is_dir():
        frames, labels = _class_folders(source, limit, input_spec)
    elif source.suffix == ".npz":
        with np.load(source, allow_pickle=False) as data:
            if "frames" not in data:
                raise ConversionError(f"{source}: a calibration .npz needs a 'frames' array")
            frames = data["frames"]
            labels = data.get("labels", None)
    elif source.suffix == ".npy":
        frames = np.load(source, allow_pickle=False)
    elif not source.exists():
        raise ConversionError(f"{source}: no such calibration file or directory")
    else:
        raise ConversionError(
            f"{source}: calibration must be an N-DIGITS root, class folders of N-MNIST "
            ".bin files, a .npz with 'frames' (and 'labels'), or a .npy of frames"
        )
    if limit is not None:
        frames = frames[:limit]
        labels = None if labels is None else labels[:limit]
    return frames, labels


def _class_folders(
    root: Path, limit: int | None, spec: InputSpec | None
) -> tuple[np.ndarray, np.ndarray]:
    from spikefleet.datasets.ndigits import sample_frames
    from spikefleet.events import read_nmnist
    from spikefleet.events.binning import spec_frames

    frames: list[np.ndarray] = []
    labels: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not folder.name.isdigit():
            raise ConversionError(
                f"{folder}: class folders must be named by their integer label (0, 1, ...)"
            )
        for recording in sorted(folder.glob("*.bin")):
            events = read_nmnist(recording)
            frames.append(sample_frames(events) if spec is None else spec_frames(events, spec))
            labels.append(int(folder.name))
            if limit is not None and len(labels) >= limit:
                break
    if not frames:
        raise ConversionError(f"{root}: no N-MNIST .bin recordings in class folders")
    if len({len(f) for f in frames}) > 1:
        raise ConversionError(
            f"{root}: the input spec makes {min(map(len, frames))} to "
            f"{max(map(len, frames))} frames per recording; calibration needs the same number "
            "for each: give the spec start_time and end_time, or n_time_bins"
        )
    return np.stack(frames), np.asarray(labels, dtype=np.int64)  # (S, frames, H, W, C)


def load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Integer labels from a .npy or a text file (one per line)."""
    source = Path(path)
    try:
        if source.suffix == ".npy":
            return np.asarray(np.load(source, allow_pickle=False)).astype(np.int64).reshape(-1)
        return np.loadtxt(source, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{source}: not a list of integer labels ({exc})") from exc
