"""Paired gains with two-way bootstrap intervals, on numbers whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kdseg.experiments.statistics import mean_and_std, paired_gain


def test_a_constant_gain_has_a_zero_width_interval() -> None:
    without = np.array([[0.5, 0.6, 0.7], [0.4, 0.6, 0.8]])
    gain = paired_gain(without + 0.05, without)
    assert gain.mean == pytest.approx(0.05)
    assert (gain.low, gain.high) == pytest.approx((0.05, 0.05))
    assert (gain.seeds, gain.cases) == (2, 3)
    assert "better" in gain.sentence()


def test_noise_around_zero_gives_an_interval_across_zero_and_says_so() -> None:
    rng = np.random.default_rng(3)
    without = rng.uniform(0.5, 0.9, size=(3, 12))
    gain = paired_gain(without + rng.normal(0, 0.05, size=(3, 12)), without)
    assert gain.low < 0 < gain.high
    assert "not distinguishable from no change" in gain.sentence()


def test_the_interval_widens_with_seed_noise_that_cases_alone_would_hide() -> None:
    """Each seed's run shifts every case the same way: resampling seeds must see that."""
    cases = np.linspace(0.5, 0.8, 20)
    without = np.tile(cases, (3, 1))
    shifts = np.array([[-0.1], [0.0], [0.25]])  # seed effects, the same on every case
    two_way = paired_gain(without + 0.05 + shifts, without)
    one_seed = paired_gain((without + 0.05 + shifts)[1:2], without[1:2])
    assert two_way.mean == pytest.approx(0.1)
    assert two_way.high - two_way.low > 0.15  # the seed spread shows
    assert one_seed.high - one_seed.low == pytest.approx(0.0)


def test_bootstrap_is_reproducible_and_refuses_unpaired_scores() -> None:
    rng = np.random.default_rng(0)
    treated, baseline = rng.uniform(size=(2, 5)), rng.uniform(size=(2, 5))
    assert paired_gain(treated, baseline) == paired_gain(treated, baseline)
    with pytest.raises(ValueError, match="same"):
        paired_gain(treated, baseline[:, :4])
    treated[0, 0] = np.nan
    with pytest.raises(ValueError, match="undefined"):
        paired_gain(treated, baseline)


def test_mean_and_std_over_seeds() -> None:
    assert mean_and_std([0.5]) == (0.5, 0.0)
    assert mean_and_std([0.4, 0.6]) == pytest.approx((0.5, 0.1414), abs=1e-4)
