"""Quantize lowered float stages into Akida 1.0 layers with integer thresholds.

For output channel j with weights W_j, bias b_j and threshold T_j, the float
neuron fires when W_j.x + b_j > T_j. With a per-channel scale s_j > 0 and
integer weights q_j = round(W_j / s_j) the chip computes the integer potential
P = q_j.x and fires when P > t_j. Since P is an integer, P > (T_j - b_j)/s_j
holds exactly when P > floor((T_j - b_j)/s_j), so t_j = floor(...) keeps the
float decision for every quantized potential (rounding to nearest would flip
it for fractional parts above one half). With global average pooling Akida
compares the SUM of the H*W potentials with the threshold (measured with akida
2.19.3), so t_j = floor(H*W*(T_j - b_j)/s_j).

The output layer read as potentials keeps s_j as host-side ``output_scales``.
Weight range: 4 bits [-7, 7] (akida rejects -8), 2 bits [-1, 1], 1 bit {0, 1}
(akida's 1-bit weights are unsigned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from spikefleet.convert.compat import Stage
from spikefleet.convert.floatsim import row_count, stage_potentials, stage_rows
from spikefleet.errors import ConversionError
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Layer,
    Padding,
    Pooling,
)

F64 = npt.NDArray[np.float64]
ClipMethod = Literal["auto", "max", "mse"]

_INT32 = np.iinfo(np.int32)
_CLIP_GRID = np.linspace(0.5, 1.0, 14)


def weight_range(bits: int) -> tuple[int, int]:
    """The integer weight range akida accepts for ``bits``-bit weights."""
    if bits == 1:
        return 0, 1
    if bits in (2, 4):
        limit = 2 ** (bits - 1) - 1
        return -limit, limit
    raise ConversionError(f"weights of {bits} bits: choose 4, 2 or 1")


def _quantize_rows(rows: F64, scales: F64, low: int, high: int) -> F64:
    return np.clip(np.rint(rows / scales[:, None]), low, high)


def choose_scales(
    weight: F64,
    bits: int,
    method: ClipMethod = "mse",
    inputs: F64 | None = None,
    boundary: F64 | None = None,
    target: F64 | None = None,
) -> F64:
    """Per-output-channel scales for ``weight`` (out, fan_in).

    ``max`` maps each channel's largest |w| to the top integer; ``mse`` picks a
    clipping point per channel on a grid. With ``inputs`` (rows of real layer
    inputs, fan_in wide) it minimises the error of the potentials against
    ``target`` (the float model's potentials for those rows; default
    ``inputs @ weight.T``); with ``boundary`` too (neuron j fires when its
    potential exceeds boundary_j) it first minimises the number of spike
    decisions that flip, after the mean potential error is corrected in the
    threshold as :func:`quantize_stages` does. Without inputs it minimises the
    error of the weights themselves.
    """
    low, high = weight_range(bits)
    rows = weight.reshape(weight.shape[0], -1)
    peak = np.abs(rows).max(axis=1) if low < 0 else np.maximum(rows.max(axis=1), 0.0)
    peak = np.where(peak > 0, peak, 1.0)
    if method == "max":
        return peak / high
    best = np.full(rows.shape[0], np.inf)
    chosen = peak / high
    fractions = _CLIP_GRID if bits > 1 else np.linspace(0.2, 1.0, 41)
    if inputs is not None and target is None:
        target = inputs @ rows.T
    target32 = margin = reference = None
    if inputs is not None and target is not None:
        # float32 products: the search compares costs, it keeps no sums
        inputs = inputs.astype(np.float32, copy=False)
        target32 = target.astype(np.float32)
        if boundary is not None:
            margin = target32 - boundary.astype(np.float32)  # fires where margin > 0
            reference = margin > 0
    for fraction in fractions:
        scales = peak * fraction / high
        quantized = _quantize_rows(rows, scales, low, high) * scales[:, None]
        if inputs is None or target32 is None:
            cost = ((quantized - rows) ** 2).mean(axis=1)
        else:
            potential_error = inputs @ quantized.T.astype(np.float32) - target32
            mean = potential_error.mean(axis=0)
            cost = np.einsum("ij,ij->j", potential_error, potential_error) / len(inputs)
            if margin is not None and reference is not None:
                potential_error -= mean
                potential_error += margin
                flips = ((potential_error > 0) != reference).sum(axis=0)
                cost = flips + cost / (1.0 + cost)  # flips first, error breaks ties
        better = cost < best
        best = np.where(better, cost, best)
        chosen = np.where(better, scales, chosen)
    return chosen


def optimise_rounding(
    rows: F64,
    scales: F64,
    inputs: F64,
    target: F64,
    low: int,
    high: int,
    boundary: F64 | None = None,
    passes: int = 8,
) -> F64:
    """Integer weights (out, fan_in) rounded up or down to fit the layer's real inputs.

    Rounding each weight to nearest is optimal for the weights, not for the
    potentials they make: errors of correlated inputs add up. Starting from
    nearest, each pass moves, per output channel, the weights whose other
    rounding (floor or ceil of w/s, the AdaRound search space) lowers the
    squared error of the potentials on ``inputs`` the most; the mean error is
    left to the threshold (bias) correction, so the inputs are centred. For a
    spiking layer (``boundary`` given) rows whose float potential lies near the
    firing boundary weigh more: they are the decisions a small error flips.
    """
    ratio = rows / scales[:, None]
    floor = np.clip(np.floor(ratio), low, high)
    ceil = np.clip(np.ceil(ratio), low, high)
    q = np.clip(np.rint(ratio), low, high)
    x = (inputs - inputs.mean(axis=0, keepdims=True)).astype(np.float32)
    if boundary is not None:
        spread = target.std(axis=0) + 1e-12
        weight = 1.0 / (1.0 + ((target - boundary[None, :]) / (0.25 * spread[None, :])) ** 2)
    else:
        weight = np.ones_like(target)
    weight = weight / weight.mean(axis=0, keepdims=True)
    weight = weight.astype(np.float32)
    error = x @ ((q - ratio) * scales[:, None]).T.astype(np.float32)  # (rows, out), centred
    energy = (x * x).T @ weight  # (fan_in, out): sum_r w_r x_ri^2
    per_pass = max(1, rows.shape[1] // 8)
    for _ in range(passes):
        other = np.where(q == floor, ceil, floor)
        delta = other - q  # (out, fan_in) in {-1, 0, 1}
        if not np.any(delta):
            break
        pull = (x.T @ (weight * error)).T  # (out, fan_in)
        gain = 2 * scales[:, None] * delta * pull + (scales[:, None] * delta) ** 2 * energy.T
        gain = np.where(delta != 0, gain, 0.0)
        if not np.any(gain < 0):
            break
        cut = np.partition(gain, per_pass - 1, axis=1)[:, per_pass - 1 : per_pass]
        move = (gain < 0) & (gain <= cut)
        change = np.where(move, delta, 0.0)
        q = q + change
        error = error + x @ (change * scales[:, None]).T.astype(np.float32)
    return q


def fewest_flips(
    potentials: F64, fires: npt.NDArray[np.bool_], start: npt.NDArray[np.int32]
) -> npt.NDArray[np.int32]:
    """Per channel, the integer threshold t for which ``potentials > t`` best matches ``fires``.

    ``potentials`` (rows, out) are the quantized layer's integer potentials on
    calibration inputs, ``fires`` the float model's decisions there. Ties go to
    the threshold nearest ``start`` (the mean-corrected one), and a channel whose
    calibration rows never come near its threshold keeps ``start``.
    """
    result = start.copy()
    rows = potentials.shape[0]
    for j in range(potentials.shape[1]):
        p = potentials[:, j]
        f = fires[:, j]
        low = int(min(p.min() - 1, start[j])) if rows else int(start[j])
        high = int(max(p.max(), start[j])) if rows else int(start[j])
        if high - low > 4 * rows + 4096:  # a sparse range: search the candidates only
            result[j] = _fewest_flips_sorted(p, f, int(start[j]))
            continue
        # cost(t) for every integer t in [low, high]: rows with p <= t stay silent, the
        # firing ones among them are misses, the silent ones above them false fires
        index = (p - low).astype(np.int64)
        fired_below = np.cumsum(np.bincount(index, weights=f, minlength=high - low + 1))
        below = np.cumsum(np.bincount(index, minlength=high - low + 1))
        cost = fired_below + (rows - below) - (f.sum() - fired_below)
        ties = np.flatnonzero(cost == cost.min()) + low
        result[j] = int(ties[np.argmin(np.abs(ties - start[j]))])
    return result


def _fewest_flips_sorted(p: F64, f: npt.NDArray[np.bool_], start: int) -> int:
    candidates = np.unique(np.concatenate([p, p - 1, [float(start)]]))
    order = np.argsort(p)
    sorted_p, sorted_f = p[order], f[order]
    below = np.searchsorted(sorted_p, candidates, side="right")
    fired_below = np.concatenate([[0], np.cumsum(sorted_f)])[below]
    cost = fired_below + (len(p) - below) - (int(sorted_f.sum()) - fired_below)
    choices = candidates[cost == cost.min()]
    return int(choices[np.argmin(np.abs(choices - start))])


def _flips(potentials: F64, fires: npt.NDArray[np.bool_], threshold: npt.NDArray[np.int32]) -> F64:
    return ((potentials > threshold[None, :]) != fires).sum(axis=0)


def validated_rounding(
    rows: F64,
    scales: F64,
    inputs: F64,
    target: F64,
    low: int,
    high: int,
    held: npt.NDArray[np.bool_],
) -> tuple[F64, bool]:
    """:func:`optimise_rounding` fitted on the rows not ``held``, and whether it was kept.

    It is kept only if, on the ``held`` rows, its potentials are closer to the
    float ones (after the mean correction) and pick the float model's top output
    at least as often as rounding to nearest does; otherwise nearest is returned.
    """
    nearest = _quantize_rows(rows, scales, low, high)
    if held.sum() < 2 or (~held).sum() < 2:
        return nearest, False
    fitted = optimise_rounding(rows, scales, inputs[~held], target[~held], low, high)

    def score(q: F64) -> tuple[float, float]:
        weights = q * scales[:, None]
        error = inputs[~held] @ weights.T - target[~held]
        potentials = inputs[held] @ weights.T - error.mean(axis=0)
        squared = float(((potentials - target[held]) ** 2).sum())
        agree = float((potentials.argmax(axis=1) == target[held].argmax(axis=1)).mean())
        return squared, agree

    squared_fit, agree_fit = score(fitted)
    squared_near, agree_near = score(nearest)
    if squared_fit < squared_near and agree_fit >= agree_near:
        return fitted, True
    return nearest, False


def _flip_cost(flips: F64, squared: F64) -> F64:
    """Flips first; the squared potential error (below one) breaks ties."""
    return flips + squared / (1.0 + squared)


def _count_rows(table: F64) -> tuple[F64, npt.NDArray[np.int64]]:
    """The distinct rows of ``table`` (ordered by its first column) and how often each occurs.

    Rows are grouped by a fixed random projection (a 1-D sort, where ``np.unique(axis=0)``
    compares whole rows and took seconds), then checked equal to their group's first
    row; if two distinct rows ever shared a key, every row is kept once each.
    """
    keys = table @ np.random.default_rng(0).uniform(0.5, 1.5, table.shape[1])
    _, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    if not np.array_equal(table[first][inverse], table):
        return table[np.argsort(table[:, 0], kind="stable")], np.ones(len(table), np.int64)
    order = np.argsort(table[first, 0], kind="stable")
    return table[first[order]], counts[order]


def cross_validated_scales(
    rows: F64,
    bits: int,
    inputs: F64,
    target: F64,
    boundary: F64,
    held: npt.NDArray[np.bool_],
) -> F64:
    """Per channel: the clipping point with the fewest flipped decisions on all rows, where
    2-fold cross-validation says the search beats the uncalibrated choice; else that choice.

    The rows split into two folds (``held``, the rows of every other calibration frame,
    and the rest). The
    search is fitted on each fold and scored on the other (the mean potential error
    taken off as the threshold correction would, measured on the fitting fold); a
    channel takes the search's choice (refitted on both folds) only when the flips it
    saves on the unseen fold, summed over both directions, are positive. Both halves
    fit and both validate, so one unlucky half neither decides nor vetoes alone
    (a single fit-on-one, check-on-the-other split did, and its choices moved with
    the calibration draw).
    """
    low, high = weight_range(bits)
    base = choose_scales(rows, bits, "mse")
    if held.sum() < 2 or (~held).sum() < 2:
        return base
    rows = rows.reshape(rows.shape[0], -1)
    peak = np.abs(rows).max(axis=1) if low < 0 else np.maximum(rows.max(axis=1), 0.0)
    peak = np.where(peak > 0, peak, 1.0)
    fractions = _CLIP_GRID if bits > 1 else np.linspace(0.2, 1.0, 41)
    candidates = np.stack([base] + [peak * fraction / high for fraction in fractions])
    # Equal rows (same fold, inputs and float potentials) decide alike: keep each once,
    # counted (a first layer's small patches of event counts repeat a lot).
    table = np.concatenate(
        [held[:, None].astype(np.float64), inputs, target], axis=1, dtype=np.float64
    )
    unique, counts = _count_rows(table)
    split = int(np.searchsorted(unique[:, 0], 0.5))  # sorted: fold 0 (not held) first
    parts = (slice(0, split), slice(split, None))
    x = unique[:, 1 : 1 + inputs.shape[1]].astype(np.float32)
    target32 = unique[:, 1 + inputs.shape[1] :].astype(np.float32)
    weight = counts.astype(np.float32)
    margin = target32 - boundary.astype(np.float32)
    fires = margin > 0
    count, channels = len(candidates), rows.shape[0]
    sizes = (float(weight[parts[0]].sum()), float(weight[parts[1]].sum()))
    own = np.zeros((2, count, channels))  # cost on fold k of the search fitted on fold k
    means = np.zeros((2, count, channels))  # each fold's mean potential error
    base_other = np.zeros((2, channels))  # flips of the base on fold 1-k, mean from fold k

    def flipped(shifted: np.ndarray, fold: slice, mean: np.ndarray) -> np.ndarray:
        return weight[fold] @ ((shifted[fold] > mean) != fires[fold])

    for g, scales in enumerate(candidates):
        quantized = _quantize_rows(rows, scales, low, high) * scales[:, None]
        error = x @ quantized.T.astype(np.float32)
        error -= target32
        for k, part in enumerate(parts):
            means[k, g] = (weight[part] @ error[part]) / sizes[k]
            squared = (weight[part] @ (error[part] ** 2)) / sizes[k] - means[k, g] ** 2
            error[part] += margin[part]  # fires where this exceeds the mean correction
            own[k, g] = _flip_cost(flipped(error, part, means[k, g]), squared)
        if g == 0:
            for k in range(2):
                base_other[k] = flipped(error, parts[1 - k], means[k, 0])
    index = np.arange(channels)
    gain = np.zeros(channels)
    for k in range(2):  # the search fitted on fold k, scored on the other fold
        fitted = own[k].argmin(axis=0)
        scales = candidates[fitted, index]
        quantized = _quantize_rows(rows, scales, low, high) * scales[:, None]
        unseen = parts[1 - k]
        shifted = x[unseen] @ quantized.T.astype(np.float32) - target32[unseen] + margin[unseen]
        mean = means[k, fitted, index]
        gain += base_other[k] - weight[unseen] @ ((shifted > mean) != fires[unseen])
    # refitted on both folds (each with its own mean correction, as fitted above)
    best = (own[0] + own[1]).argmin(axis=0)
    return np.where(gain > 0, candidates[best, index], base)


def cross_validated_thresholds(
    potentials: F64,
    fires: npt.NDArray[np.bool_],
    start: npt.NDArray[np.int32],
    held: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int32]:
    """:func:`fewest_flips` on all rows, kept per channel only where 2-fold
    cross-validation (fit on each fold, count flips on the other) says it flips
    fewer decisions than ``start``."""
    if held.all() or not held.any():
        return start
    result = start.copy()
    rows = potentials.shape[0]
    lows = np.minimum(potentials.min(axis=0) - 1, start).astype(np.int64)
    highs = np.maximum(potentials.max(axis=0), start).astype(np.int64)
    widths = highs - lows + 1
    sparse = widths > 4 * rows + 4096
    for j in np.flatnonzero(sparse):  # a sparse range: the candidate search per fold
        one = slice(j, j + 1)
        gain = 0
        for fit in (~held, held):
            fitted = fewest_flips(potentials[fit, one], fires[fit, one], start[one])
            gain += int(_flips(potentials[~fit, one], fires[~fit, one], start[one])[0])
            gain -= int(_flips(potentials[~fit, one], fires[~fit, one], fitted)[0])
        if gain > 0:
            result[j] = fewest_flips(potentials[:, one], fires[:, one], start[one])[0]
    dense = np.flatnonzero(~sparse)
    if not len(dense):
        return result.astype(np.int32)
    # Flips of each fold at every integer threshold t in [low_j, high_j], as in
    # fewest_flips, for all channels at once: channel j's thresholds are the segment
    # offset_j .. offset_j + width_j - 1 of one histogram.
    offsets = np.concatenate([[0], np.cumsum(widths[dense])])
    total = int(offsets[-1])
    segment = np.repeat(np.arange(len(dense)), widths[dense])
    costs = []
    for fold in (~held, held):
        p = potentials[fold][:, dense]
        f = fires[fold][:, dense]
        index = (p - lows[dense] + offsets[:-1]).astype(np.int64).ravel()
        fired = np.cumsum(np.bincount(index, weights=f.ravel(), minlength=total))
        below = np.cumsum(np.bincount(index, minlength=total))
        # cumulative sums restart at each channel's segment
        fired_before = np.concatenate([[0.0], fired])[offsets[:-1]][segment]
        below_before = np.concatenate([[0], below])[offsets[:-1]][segment]
        fired_below = fired - fired_before
        silent = len(p) - (below - below_before)
        costs.append(fired_below + silent - (f.sum(axis=0)[segment] - fired_below))
    both = costs[0] + costs[1]
    for k, j in enumerate(dense):
        part = slice(int(offsets[k]), int(offsets[k + 1]))
        origin = int(start[j] - lows[j])
        a, b = costs[0][part], costs[1][part]
        fit_a, fit_b = _nearest_best(a, origin), _nearest_best(b, origin)
        if (b[origin] - b[fit_a]) + (a[origin] - a[fit_b]) > 0:
            result[j] = _nearest_best(both[part], origin) + lows[j]
    return result.astype(np.int32)


def _nearest_best(cost: F64, origin: int) -> int:
    """The index of ``cost``'s minimum nearest ``origin`` (the lower one on a tie)."""
    ties = np.flatnonzero(cost == cost.min())
    return int(ties[np.argmin(np.abs(ties - origin))])


def on_grid(rows: F64, bits: int) -> F64 | None:
    """Per-channel scales if every weight is already an integer step multiple (|q| <= top).

    A channel's step is max|w|/k for the k in top..1 that makes all its weights
    whole steps (quantization-aware training leaves weights like that); None
    when some channel has no such step.
    """
    low, high = weight_range(bits)
    if low == 0:
        return None
    peak = np.abs(rows).max(axis=1)
    scales = np.zeros(rows.shape[0])
    for j in range(rows.shape[0]):
        if peak[j] == 0:
            scales[j] = 1.0
            continue
        for k in range(high, 0, -1):
            ratio = rows[j] / (peak[j] / k)
            if np.all(np.abs(ratio - np.rint(ratio)) <= 1e-4):
                scales[j] = peak[j] / k
                break
        else:
            return None
    return scales


def integer_threshold(value: F64) -> npt.NDArray[np.int32]:
    """floor() of the real threshold, robust to float noise just below an integer."""
    nearest = np.rint(value)
    snapped = np.where(
        np.abs(value - nearest) <= 1e-9 * np.maximum(1.0, np.abs(value)), nearest, value
    )
    return np.clip(np.floor(snapped), _INT32.min, _INT32.max).astype(np.int32)


def akida_conv_weights(weight: F64) -> F64:
    """torch (out, in, kh, kw) cross-correlation -> akida (kh, kw, in, out) convolution."""
    return weight[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)


def akida_dense_weights(weight: F64, in_shape: tuple[int, int, int]) -> F64:
    """torch (out, C*H*W) over a C-order flatten -> akida rows (c*W + w)*H + h."""
    c, h, w = in_shape
    out = weight.shape[0]
    return weight.reshape(out, c, h, w).transpose(0, 1, 3, 2).reshape(out, c * w * h).T


@dataclass
class Quantized:
    """Akida layers plus what the host and the fidelity report need to know.

    ``always_on`` counts, per layer, the outputs per frame that fire on every
    frame because they carry the next layer's bias (see :func:`quantize_stages`).
    ``integer``, ``thresholds`` and ``biases`` are per stage, in torch's layout
    and before any always-on outputs: the integer weights, the integer
    thresholds (zeros for a read-out) and the corrected float biases (the
    read-out's rides on always-on inputs); ``spikefleet.qat`` starts from them.
    """

    layers: list[Layer]
    output_scales: npt.NDArray[np.float32] | None
    scales: list[F64]
    always_on: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    integer: list[F64] = field(default_factory=list)
    thresholds: list[npt.NDArray[np.int32]] = field(default_factory=list)
    biases: list[F64] = field(default_factory=list)


def _bias_units(bias: F64, scales: F64, high: int, low: int) -> npt.NDArray[np.int64] | None:
    """The output layer's bias in weight units, split over always-on inputs (k, units).

    None when the bias cannot be carried (unsigned 1-bit weights, or more than
    eight always-on inputs would be needed).
    """
    total = np.rint(bias / scales).astype(np.int64)
    if not np.any(total):
        return np.zeros((0, len(bias)), np.int64)
    if low == 0 and np.any(total < 0):
        return None
    count = int(np.ceil(np.abs(total).max() / high))
    if count > 8:
        return None
    parts = np.zeros((count, len(bias)), np.int64)
    remaining = total.copy()
    for k in range(count):
        parts[k] = np.clip(remaining, -high, high)
        remaining -= parts[k]
    return parts


def quantize_stages(
    stages: list[Stage],
    *,
    bits: int = 4,
    input_bits: int = 4,
    clip: ClipMethod = "auto",
    calibration: np.ndarray | None = None,
    float_spikes: list[np.ndarray] | None = None,
    max_rows: int = 2048,
    rounding: bool = True,
    row_budget: int = 2**22,
    scale_search: bool = True,
) -> Quantized:
    """Akida layers for ``stages``.

    ``calibration`` frames (N, H, W, C) run through the float stages and,
    layer by layer, through the quantized ones: each layer is calibrated on the
    spikes the quantized layers before it really produce, against the float
    model's potentials. With ``clip="auto"`` (and ``scale_search``) a spiking
    layer's channel is clipped where 2-fold cross-validation over the calibration
    frames says that flips fewer spike decisions than the uncalibrated clipping
    (:func:`cross_validated_scales`); ``clip="mse"`` takes the fewest-flips search
    as it is. The mean potential error left is corrected in the integer threshold
    (in the bias of an output layer), and the threshold moved where
    cross-validation confirms it (:func:`cross_validated_thresholds`). A
    convolution is calibrated on up to ``row_budget / fan_in`` of its output
    positions (at least ``max_rows``, at most 65,536; a seeded draw, so the same
    frames give the same program): a narrow first layer, where int4 flips the most
    decisions, gets many rows for its search. ``float_spikes[k]``,
    when given, are the float model's spikes out of stage k for those frames
    (already computed for the fidelity report), so only the quantized side runs.

    Akida has no bias on a layer without activation, so the bias of an output
    layer read as potentials rides on always-on inputs: the previous layer gets
    zero-weight neurons with threshold -1 (0 > -1 fires on every frame), and
    the output layer weights them with round(bias/scale), split into [-7, 7].
    """
    c, h, w = stages[0].in_shape
    low, high = weight_range(bits)
    weights: list[F64] = []
    thresholds: list[npt.NDArray[np.int32]] = []
    all_scales: list[F64] = []
    rng = np.random.default_rng(0)
    x_float = x_quant = None
    if calibration is not None and len(calibration):
        x_float = x_quant = calibration.astype(np.float32)
    biases: list[F64] = []
    result_notes: list[str] = []
    for index, stage in enumerate(stages):
        rows = stage.weight.reshape(stage.weight.shape[0], -1)
        inputs = target = None
        held = np.zeros(0, dtype=bool)
        if x_float is not None and x_quant is not None:
            count = row_count(stage, len(x_float))
            limit = max(max_rows, min(65536, row_budget // rows.shape[1]))
            pick = rng.choice(count, limit, replace=False) if count > limit else None
            inputs = stage_rows(stage, x_quant, pick)
            # the first layer's float and quantized inputs are the same frames
            float_rows = inputs if x_float is x_quant else stage_rows(stage, x_float, pick)
            target = float_rows @ rows.T
            flat = np.arange(count) if pick is None else pick
            held = (flat // (count // len(x_float))) % 2 == 1  # every other frame validates
        boundary = stage.threshold - stage.bias if stage.spike is not None else None
        grid = on_grid(rows, bits)
        if grid is not None:  # quantization-aware training made them: take them as they are
            scales = grid
            q = _quantize_rows(rows, scales, low, high)
            result_notes.append(
                f"{stage.name}: weights already on the int{bits} grid (quantization-aware "
                "training), taken as they are"
            )
            inputs = target = None
        else:
            method: ClipMethod = clip
            if clip == "auto":  # measured best on held-out data (docs/converting.md)
                method = "max" if inputs is not None else "mse"
            if (
                clip == "auto"
                and scale_search
                and inputs is not None
                and target is not None
                and boundary is not None
            ):
                scales = cross_validated_scales(rows, bits, inputs, target, boundary, held)
                result_notes.append(
                    f"{stage.name}: {int((scales != choose_scales(rows, bits, 'mse')).sum())} of "
                    f"{len(scales)} channels clipped for the fewest flipped decisions (kept where "
                    "2-fold cross-validation on the calibration frames flipped fewer than the "
                    "weights' squared-error clipping)"
                )
            else:
                scales = choose_scales(rows, bits, method, inputs, boundary, target)
            q = _quantize_rows(rows, scales, low, high)
        # Rounding is optimised where its proxy is the quantity that matters: the
        # read-out's potentials are the class scores. (On spiking layers the squared
        # potential error measured no better than rounding to nearest.)
        optimise = rounding and stage.spike is None
        if optimise and inputs is not None and target is not None and len(inputs) > 1:
            q, kept = validated_rounding(rows, scales, inputs, target, low, high, held)
            result_notes.append(
                f"{stage.name}: rounding optimised on half the calibration samples "
                + (
                    "kept (it did better on the other half)"
                    if kept
                    else "dropped, rounded to nearest (it did no better on the other half)"
                )
            )
        correction = np.zeros(len(scales))
        if inputs is not None and target is not None and len(inputs):
            correction = (inputs @ (q * scales[:, None]).T - target).mean(axis=0)
        area = 1
        if stage.pool == "gap":
            _, pre_h, pre_w = pre_pool_shape(stage)
            area = pre_h * pre_w
        if stage.spike is not None:
            real = area * (stage.threshold - stage.bias + correction) / scales
            threshold = integer_threshold(real)
            if inputs is not None and target is not None and len(inputs) and boundary is not None:
                potentials = np.rint(area * (inputs @ q.T))
                start = threshold
                threshold = cross_validated_thresholds(potentials, target > boundary, start, held)
                result_notes.append(
                    f"{stage.name}: {int((threshold != start).sum())} of {len(threshold)} "
                    "thresholds moved to flip fewer decisions (kept where 2-fold "
                    "cross-validation on the calibration frames flipped fewer)"
                )
            thresholds.append(threshold)
        else:
            thresholds.append(np.zeros(len(scales), np.int32))
        biases.append(stage.bias - correction)
        weights.append(q.reshape(stage.weight.shape))
        all_scales.append(scales)
        if x_float is not None and x_quant is not None and stage.spike is not None:
            if float_spikes is not None:
                x_float = float_spikes[index].astype(np.float32)
            else:
                fires = stage_potentials(stage, x_float) > stage.threshold.reshape(1, 1, 1, -1)
                x_float = fires.astype(np.float32)
            integer = Stage(**{**vars(stage), "weight": weights[-1], "bias": np.zeros(len(q))})
            potential = np.rint(stage_potentials(integer, x_quant) * area)
            x_quant = (potential > thresholds[-1].reshape(1, 1, 1, -1)).astype(np.float32)
        else:
            x_float = x_quant = None

    result = Quantized([InputData("input", (h, w, c), input_bits)], None, all_scales)
    result.integer, result.thresholds, result.biases = list(weights), list(thresholds), biases
    result.notes.extend(result_notes)
    last = stages[-1]
    in_shapes = [stage.in_shape for stage in stages]
    if last.spike is None:
        result.output_scales = all_scales[-1].astype(np.float32)
        if np.any(biases[-1] != 0):
            parts = _bias_units(biases[-1], all_scales[-1], high, low)
            if len(stages) < 2 or last.kind != "dense" or parts is None:
                result.notes.append(
                    f"{last.name}: Akida has no bias on a layer without activation and it "
                    "could not ride on always-on inputs; the bias is dropped (see the fidelity)"
                )
            elif len(parts):
                _add_always_on(stages, weights, thresholds, in_shapes, parts, result)
    elif last.output_gain is not None:
        result.output_scales = last.output_gain.astype(np.float32)

    for index, stage in enumerate(stages):
        q, threshold = weights[index], thresholds[index]
        activation = (
            Activation(bits=1, step=np.ones(q.shape[0], np.float32))
            if stage.spike is not None
            else None
        )
        if stage.kind == "conv":
            result.layers.append(
                Convolutional(
                    name=stage.name,
                    weights=np.ascontiguousarray(akida_conv_weights(q)).astype(np.int8),
                    threshold=threshold,
                    weights_bits=bits,
                    stride=stage.stride,
                    padding=Padding.SAME if stage.padding == "same" else Padding.VALID,
                    pooling={
                        "none": Pooling.NONE,
                        "max": Pooling.MAX,
                        "gap": Pooling.GLOBAL_AVERAGE,
                    }[stage.pool],
                    pool_size=stage.pool_size,
                    pool_stride=stage.pool_stride,
                    activation=activation,
                )
            )
        else:
            dense = akida_dense_weights(q, in_shapes[index])
            result.layers.append(
                FullyConnected(
                    name=stage.name,
                    weights=np.ascontiguousarray(dense).astype(np.int8),
                    threshold=threshold,
                    weights_bits=bits,
                    activation=activation,
                )
            )
    return result


def _add_always_on(
    stages: list[Stage],
    weights: list[F64],
    thresholds: list[npt.NDArray[np.int32]],
    in_shapes: list[tuple[int, int, int]],
    parts: npt.NDArray[np.int64],
    result: Quantized,
) -> None:
    """Give the previous layer ``len(parts)`` always-firing outputs carrying the bias."""
    count = len(parts)
    previous, last = stages[-2], stages[-1]
    q_prev = weights[-2]
    zeros = np.zeros((count, *q_prev.shape[1:]))
    weights[-2] = np.concatenate([q_prev, zeros])
    thresholds[-2] = np.concatenate([thresholds[-2], np.full(count, -1, np.int32)])
    channels, height, width = in_shapes[-1]
    q_last = weights[-1].reshape(len(last.bias), channels, height, width)
    extra = np.zeros((len(last.bias), count, height, width))
    extra[:, :, 0, 0] = parts.T  # one position per always-on channel carries the bias
    weights[-1] = np.concatenate([q_last, extra], axis=1).reshape(len(last.bias), -1)
    in_shapes[-1] = (channels + count, height, width)
    result.always_on[previous.name] = count * height * width
    result.notes.append(
        f"{last.name}: its bias rides on {count} always-on output(s) added to {previous.name} "
        "(Akida has no bias on a layer without activation)"
    )


def pre_pool_shape(stage: Stage) -> tuple[int, int, int]:
    """The convolution's output shape before pooling."""
    _, h, w = stage.in_shape
    kh, kw = stage.weight.shape[2], stage.weight.shape[3]
    top, bottom, left, right = stage.float_pad
    return (
        stage.weight.shape[0],
        (h + top + bottom - kh) // stage.stride + 1,
        (w + left + right - kw) // stage.stride + 1,
    )
