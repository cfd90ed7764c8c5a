"""The paired statistics the seed benchmark reports (benchmarks/convert_seeds.py)."""

from __future__ import annotations

import numpy as np
import pytest

from support.paired import counts, paired_bootstrap, t_interval


def test_counts_separate_lost_from_gained_samples() -> None:
    labels = np.array([0, 1, 2, 3, 4])
    baseline = np.array([0, 1, 2, 0, 0])  # wrong on samples 3 and 4
    method = np.array([0, 2, 2, 3, 1])  # loses 1, gains 3, still wrong on 4 (differently)
    c = counts(labels, baseline, method)
    assert (c.baseline_errors, c.errors) == (2, 2)
    assert (c.lost, c.gained, c.disagreements) == (1, 1, 3)


def test_counts_refuse_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="one length"):
        counts(np.zeros(3), np.zeros(3), np.zeros(4))


def test_paired_difference_is_exact_and_its_interval_covers_it() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.random(400) < 0.95
    method = baseline.copy()
    method[np.flatnonzero(baseline)[:8]] = False  # 8 samples of 400 lost: -2 points
    interval = paired_bootstrap(baseline, method, draws=4000)
    assert interval.mean == pytest.approx(-2.0)
    assert interval.low < -2.0 < interval.high
    assert interval.high < 0  # eight losses and no gains: the interval excludes zero


def test_pairing_removes_the_samples_shared_difficulty() -> None:
    """Two methods wrong on the same hard samples differ by nothing, with no spread."""
    right = np.random.default_rng(2).random(300) < 0.8
    interval = paired_bootstrap(right, right.copy(), draws=500)
    assert (interval.mean, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_two_level_bootstrap_widens_with_disagreeing_models() -> None:
    """Over models the interval also holds their spread: equal means, wider when models differ."""
    samples = 300
    baseline = np.ones((4, samples), bool)
    steady = baseline.copy()
    steady[:, :3] = False  # every model loses 3 samples: -1 point each
    spread = baseline.copy()
    spread[0, :12] = False  # one model loses 12, the others none: -1 point on average
    narrow = paired_bootstrap(baseline, steady, draws=4000)
    wide = paired_bootstrap(baseline, spread, draws=4000)
    assert narrow.mean == pytest.approx(-1.0) and wide.mean == pytest.approx(-1.0)
    assert wide.high - wide.low > narrow.high - narrow.low


def test_t_interval_over_models() -> None:
    interval = t_interval(np.array([-1.0, 0.0, 1.0]))
    # mean 0, sd 1, t(0.975, 2 df) = 4.303: half width 4.303 / sqrt(3)
    assert interval.mean == 0.0
    assert interval.high == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)
    with pytest.raises(ValueError, match="two values"):
        t_interval(np.array([1.0]))


def test_models_scored_on_their_own_samples_are_resampled_independently() -> None:
    """Held-out sets of different models: the mean is the same, the samples' luck not shared."""
    rng = np.random.default_rng(3)
    baseline = rng.random((5, 200)) < 0.9
    method = baseline & (rng.random((5, 200)) < 0.97)
    shared = paired_bootstrap(baseline, method, draws=3000)
    own = paired_bootstrap(baseline, method, draws=3000, shared=False)
    assert own.mean == shared.mean == pytest.approx(100 * (method.mean() - baseline.mean()))
    assert own.low < own.mean < own.high < 0
