"""Akida 1.0's quantized activation, as measured with akida 2.19.3.

A layer with ``act_bits`` b, threshold T and ``act_step`` s outputs, for an
integer potential p::

    b == 1:  1 if p > T else 0
    b >= 2:  clip(ceil(16 * (p - T) / D), 0, 2**b - 1),  D = floor(16 * s) * 2**(4 - b)

i.e. akida keeps the step as a fixed-point number with 4 fractional bits
(rounded down) and, for 2-bit outputs, widens it by 4. Steps below 1/16 are
rejected by akida. Output level k >= 1 is reached exactly when
``16 * (p - T) > (k - 1) * D``, so the engine compares potentials against
per-level integer boundaries instead of dividing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spikefleet.errors import EngineError
from spikefleet.program.model import Activation

MIN_STEP = 1.0 / 16.0


def step_units(activation: Activation, where: str) -> npt.NDArray[np.int64]:
    """The fixed-point step D (in 1/16 of a potential unit) of each output channel."""
    step = np.asarray(activation.step, dtype=np.float64)
    if np.any(step < MIN_STEP):
        bad = float(step[step < MIN_STEP][0])
        raise EngineError(
            f"{where}: activation step {bad} is below 1/16, which akida rejects; "
            "use steps of at least 0.0625"
        )
    units = np.floor(step * 16.0).astype(np.int64)
    return units << (4 - activation.bits)


def level_boundaries(
    activation: Activation, threshold: npt.NDArray[np.int32], where: str
) -> npt.NDArray[np.float64]:
    """Potentials a channel must exceed for each output level: shape (levels, channels).

    Row k-1 holds T + (k - 1) * D / 16: a potential p gives level >= k iff p > row k-1.
    Values are dyadic rationals, exact in float64, and because p is an integer
    ``p > floor(boundary)`` is the same test, which keeps the comparison integral.
    """
    t = threshold.astype(np.float64)
    if activation.bits == 1:
        return t[None, :]
    units = step_units(activation, where).astype(np.float64)
    levels = (1 << activation.bits) - 1
    k = np.arange(levels, dtype=np.float64)[:, None]
    return np.floor(t[None, :] + k * units[None, :] / 16.0)


def quantize(potentials: np.ndarray, boundaries: np.ndarray) -> npt.NDArray[np.uint8]:
    """Activation levels of integer-valued ``potentials`` (..., channels), for the
    paths that leave the C kernels (max pooling, saturating global pooling)."""
    if boundaries.shape[0] == 1:
        return (potentials > boundaries[0]).view(np.uint8)
    out = (potentials > boundaries[0]).view(np.uint8).copy()
    for row in boundaries[1:]:
        out += potentials > row
    return out
