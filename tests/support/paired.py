"""Paired comparisons of two classifiers on one test set, for benchmarks that must beat its noise.

A test split of a few hundred samples resolves accuracy to a sample (0.28 point
at 359), and one trained model is one draw of its recipe. These helpers give the
difference in accuracy of a method against its baseline (int4 against float)
with a bootstrap interval, paired: both are scored on the same samples, so
resampling the samples keeps each sample's pair together and the shared
difficulty of a sample cancels. Over several models (seeds) the two-level
bootstrap resamples the models and, independently, the test samples (the same
samples for every model: the test set is shared, so its luck is shared too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean difference in points (100 x accuracy) and its interval."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": round(self.mean, 3), "low": round(self.low, 3), "high": round(self.high, 3)}


@dataclass(frozen=True)
class Counts:
    """How two classifiers' top-1 answers differ on the same samples."""

    baseline_errors: int
    errors: int
    disagreements: int
    lost: int  # baseline right, method wrong
    gained: int  # baseline wrong, method right


def counts(labels: np.ndarray, baseline: np.ndarray, predicted: np.ndarray) -> Counts:
    """Errors, top-1 disagreements, and samples lost and gained against the baseline."""
    labels, baseline, predicted = (np.asarray(a) for a in (labels, baseline, predicted))
    if not labels.shape == baseline.shape == predicted.shape or labels.ndim != 1:
        raise ValueError("labels and both predictions must be 1-D arrays of one length")
    right_before, right_after = baseline == labels, predicted == labels
    return Counts(
        baseline_errors=int((~right_before).sum()),
        errors=int((~right_after).sum()),
        disagreements=int((baseline != predicted).sum()),
        lost=int((right_before & ~right_after).sum()),
        gained=int((~right_before & right_after).sum()),
    )


def _differences(baseline_right: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per sample (and model): +1 gained, -1 lost, 0 same, as int8, at least 2-D."""
    baseline_right, right = np.asarray(baseline_right, bool), np.asarray(right, bool)
    if baseline_right.shape != right.shape or baseline_right.size == 0:
        raise ValueError("both correctness arrays must have one non-empty shape")
    return np.atleast_2d(right.astype(np.int8) - baseline_right.astype(np.int8))


def paired_bootstrap(
    baseline_right: np.ndarray,
    right: np.ndarray,
    draws: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    shared: bool = True,
) -> Interval:
    """Accuracy of ``right`` minus ``baseline_right`` in points, resampling test samples.

    Both are boolean (samples,) arrays on the same samples, or (models, samples):
    then the models are resampled too (the two-level bootstrap) and the
    difference is the mean over models. ``shared``: column i is the same sample
    for every model (one test set), so one resampling of the samples serves all
    models; otherwise each model's samples are its own (each holds out other
    train samples) and are resampled independently. The interval is the
    percentile one.
    """
    diff = _differences(baseline_right, right).astype(np.float64)
    models, samples = diff.shape
    rng = np.random.default_rng(seed)
    model_weights = (
        np.ones((draws, 1))
        if models == 1
        else rng.multinomial(models, [1 / models] * models, draws)
    )
    uniform = [1 / samples] * samples
    if shared:
        sample_weights = rng.multinomial(samples, uniform, draws)
        # draw d: sum over models m and samples i of w_m[d] * diff[m, i] * v_i[d]
        totals = np.einsum("dm,mi,di->d", model_weights, diff, sample_weights)
    else:
        per_model = np.stack(
            [rng.multinomial(samples, uniform, draws) @ diff[m] for m in range(models)], axis=1
        )
        totals = (model_weights * per_model).sum(1)
    stats = 100.0 * totals / (models * samples)
    tail = 100.0 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(100.0 * float(diff.mean()), float(low), float(high))


def t_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """Mean of per-model differences (points) with Student's t interval over the models."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError("a t interval needs at least two values")
    mean = float(values.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * float(
        values.std(ddof=1) / np.sqrt(len(values))
    )
    return Interval(mean, mean - half, mean + half)
