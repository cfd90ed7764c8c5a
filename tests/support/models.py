"""Model files for conversion tests and benchmarks: seeded and generated, never downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

#: The reference topology (Akida-style 'same' padding on conv1).
REFERENCE_ARCH = (
    "Input(34,34,2) Pad(0,1,0,1) Conv(32,3,s2,p0) Leaky Conv(64,3,s2) Leaky FC(10) Leaky"
)


@dataclass(frozen=True)
class ReferenceModel:
    weights: Path  # a state_dict (safetensors) of REFERENCE_ARCH
    frames: np.ndarray  # 32 calibration frames, uint8 (N, 34, 34, 2)
    labels: np.ndarray  # their 32 labels


def reference_state_dict(root: Path) -> ReferenceModel:
    """The reference topology's seeded weights in ``root/ref.safetensors``, and sparse
    calibration frames with labels (the same every call)."""
    rng = np.random.default_rng(7)
    weights = {
        "conv1.weight": rng.normal(0, 0.5, (32, 2, 3, 3)),
        "conv1.bias": np.zeros(32),
        "conv2.weight": rng.normal(0, 0.3, (64, 32, 3, 3)),
        "conv2.bias": np.full(64, 0.2),
        "fc1.weight": rng.normal(0, 0.3, (10, 64 * 9 * 9)),
        "fc1.bias": np.zeros(10),
    }
    path = root / "ref.safetensors"
    save_file({k: v.astype(np.float32) for k, v in weights.items()}, str(path))
    counts = rng.integers(0, 16, (32, 34, 34, 2))
    frames = (counts * (rng.random(counts.shape) < 0.2)).astype(np.uint8)
    return ReferenceModel(path, frames, rng.integers(0, 10, 32))
